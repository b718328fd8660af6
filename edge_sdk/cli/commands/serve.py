"""`edge-sdk serve`: the bundle over HTTP (OpenAI images API, Open Inference Protocol v2, /metrics)."""

from __future__ import annotations

import json
import os

import click


def _size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    w, _, h = value.lower().partition("x")
    if not (w.isdigit() and h.isdigit()):
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT (e.g. 512x512)")
    return int(w), int(h)


@click.command("serve")
@click.argument("bundle", type=click.Path())
@click.option("--board", default=None, help="Board profile: requests are limited to what its plan fits.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback exposes the board: set a token.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port; the one chosen is printed).")
@click.option("--token-env", default=None, metavar="VAR",
              help="Require 'Authorization: Bearer <token>' with the token read from this environment "
                   "variable (never from the command line, where ps shows it).")
@click.option("--max-queue", default=4, show_default=True, type=click.IntRange(0, 1000),
              help="Requests that may wait behind the running one; more get 429.")
@click.option("--max-size", default=None, metavar="WxH", help="Largest image size (default: the model's native size).")
@click.option("--max-batch", default=4, show_default=True, type=click.IntRange(1, 64), help="Largest n per request.")
@click.option("--max-steps", default=50, show_default=True, type=click.IntRange(1, 10000), help="Largest steps.")
@click.option("--shutdown-timeout", default=30.0, show_default=True, type=float,
              help="Seconds in-flight requests may take to finish on SIGTERM before they are cancelled.")
@click.option("--remote", multiple=True, metavar="COMPONENT=URL",
              help="Run COMPONENT on an Open Inference Protocol server (needs --board); repeatable. "
                   "E.g. --remote denoiser=http://10.0.0.5:8000: prompts and images stay on the board.")
@click.option("--name", default=None, help="Model name in /v1/models (default: the bundle's name).")
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check of every file at start.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--json", "as_json", is_flag=True, help="Print the listening address and limits as one JSON line.")
def command(bundle, board, host, port, token_env, max_queue, max_size, max_batch, max_steps, shutdown_timeout,
            remote, name, no_verify, log_level, as_json):
    """Serve BUNDLE over HTTP: one generator, loaded once, behind a bounded queue.

    \b
    POST /v1/images/generations   OpenAI images API (b64_json; extra: steps, seed, guidance,
                                  sampler; "stream": true for server-sent progress events)
    GET  /v2/health/live|ready    Open Inference Protocol v2; every component of the bundle
    GET  /v2/models/NAME          is a model: POST /v2/models/NAME/infer runs it
    POST /v2/models/NAME/infer
    GET  /metrics                 Prometheus: queue depth, latency, peak memory
    """
    try:
        import uvicorn
        from starlette import __version__ as _  # noqa: F401
    except ImportError as e:
        from edge_sdk.errors import RuntimeUnavailableError

        raise RuntimeUnavailableError(f"edge-sdk serve needs its web stack: {e}",
                                      hint="pip install 'edge-sdk[serve]'") from None
    from edge_sdk.api import load
    from edge_sdk.bundle import Bundle
    from edge_sdk.errors import UsageError
    from edge_sdk.serve import ServeConfig, build_app, limits_for

    token = None
    if token_env is not None:
        token = os.environ.get(token_env)
        if not token:
            raise UsageError(f"--token-env {token_env}: that environment variable is empty or not set")
    loopback = host in ("127.0.0.1", "::1", "localhost")
    if not loopback and token is None:
        click.echo(f"warning: serving on {host} without a token: anyone who reaches this port can use the board "
                   "(set --token-env)", err=True)
    remote_map = {}
    for item in remote:
        comp, sep, url = item.partition("=")
        if not sep or not comp or not url:
            raise UsageError(f"--remote {item!r} is not COMPONENT=URL", hint="e.g. --remote denoiser=http://10.0.0.5:8000")
        remote_map[comp] = url
    b = Bundle.open(bundle, verify=not no_verify)
    limits, plan = limits_for(b, board=board, max_size=_size(max_size), max_n=max_batch, max_steps=max_steps,
                              remote=remote_map or None)
    gen = load(b, plan=plan) if plan is not None else load(b)
    config = ServeConfig(limits=limits, model_name=name or b.name, token=token, max_queue=max_queue)
    app = build_app(gen, config)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if not self.started:
                return
            addr = self.servers[0].sockets[0].getsockname() if self.servers else (host, port)
            url = f"http://{addr[0]}:{addr[1]}"
            if as_json:
                click.echo(json.dumps({"url": url, "host": addr[0], "port": addr[1], "model": config.model_name,
                                       "components": list(b.components), "limits": limits.to_json(),
                                       "board": board, "auth": token is not None}), nl=True)
            else:
                click.echo(f"edge-sdk serve: {config.model_name} on {url} (components: "
                           f"{', '.join(b.components)}; max {limits.max_width}x{limits.max_height}, "
                           f"n<={limits.max_n}, steps<={limits.max_steps}; queue {max_queue})")
            click.get_text_stream("stdout").flush()

        def handle_exit(self, sig, frame) -> None:
            app.app.state.stop_accepting()  # new requests on open connections get 503 from now on
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal after its graceful shutdown (exit status -15); a stop
            # we asked for and completed is a success: exit 0.
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    server = Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                                   timeout_graceful_shutdown=shutdown_timeout, access_log=log_level == "debug"))
    server.run()
