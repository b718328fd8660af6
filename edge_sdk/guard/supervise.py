"""Crash isolation: load and run models in a child process watched by a watchdog.

A runtime that dies natively (a segfault on a hostile model, SIGBUS on a file truncated under an
mmap, the kernel's OOM killer) takes its whole process with it; no ``try`` can catch that. So the
work runs in a child (``python -m edge_sdk.guard.supervise``, a fresh interpreter: no fork of the app's
threads, no re-import of the app's ``__main__``) that talks to the parent over a private pipe. The
parent survives and gets a typed error:

- the child died by a signal -> ``SupervisedProcessError`` naming it (SIGSEGV, SIGBUS, SIGKILL...);
- it went silent longer than the watchdog allows -> it is killed, ``SupervisedProcessError``;
- it raised an edge-sdk error -> the same error type and message in the parent.

``run_supervised(fn, *args)`` runs one importable function; ``SupervisedGenerator`` keeps a child
with a loaded bundle and serves ``generate`` calls (what ``edge_sdk.load(..., isolate=True)`` returns).
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from edge_sdk import errors
from edge_sdk.errors import EdgeSDKError, InferenceError, SupervisedProcessError

DEFAULT_LOAD_TIMEOUT = 300.0
_HINT_BY_SIGNAL = {
    "SIGKILL": "the kernel's OOM killer sends SIGKILL when memory runs out: try a smaller plan "
               "(edge-sdk plan --board ...) or a lower resolution",
    "SIGSEGV": "the runtime crashed natively; the model file may be corrupt or hostile, or the runtime "
               "has a bug: check the bundle with `edge-sdk info` and try another runtime",
    "SIGBUS": "a memory-mapped model file changed or was truncated while in use; do not overwrite a "
              "bundle that is running",
    "SIGABRT": "the runtime aborted (a failed assertion inside it); try another runtime or precision",
}


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class _Child:
    """A worker process and the two pipe ends the parent talks to it through."""

    def __init__(self, what: str) -> None:
        self.what = what
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
        env = dict(os.environ)
        # The child must import the same edge_sdk as this process, whatever its working folder.
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join([pkg_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_sdk.guard.supervise", str(p2c_r), str(c2p_w)],
                pass_fds=(p2c_r, c2p_w), env=env, stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            os.close(p2c_r)
            os.close(c2p_w)
        self.send_conn = Connection(p2c_w, readable=False)
        self.recv_conn = Connection(c2p_r, writable=False)

    def send(self, msg: Any) -> None:
        try:
            self.send_conn.send(msg)
        except (BrokenPipeError, OSError):
            self._raise_died()

    def recv(self, timeout: float | None) -> Any:
        """The child's next message; raises if it dies or stays silent past ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self.recv_conn.poll(left if left is not None else None):
                try:
                    return self.recv_conn.recv()
                except (EOFError, OSError):
                    self._raise_died()
            if deadline is not None and time.monotonic() >= deadline:
                self.kill()
                raise SupervisedProcessError(
                    f"{self.what}: no answer from the child process within {timeout:g} s; it was killed",
                    hint="the model may hang on this input, or the board is much slower than planned: "
                         "raise the timeout or check the plan")

    def _raise_died(self) -> None:
        code = self.proc.wait()
        self.close()
        if code < 0:
            name = _signal_name(code)
            raise SupervisedProcessError(f"{self.what}: the child process died by {name}",
                                         hint=_HINT_BY_SIGNAL.get(name, "see the child's stderr above"))
        raise SupervisedProcessError(f"{self.what}: the child process exited with code {code} without answering",
                                     hint="see the child's stderr above")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.close()

    def close(self) -> None:
        for c in (self.send_conn, self.recv_conn):
            try:
                c.close()
            except OSError:
                pass

    @property
    def pid(self) -> int:
        return self.proc.pid


def _rebuild_error(payload: dict[str, Any]) -> EdgeSDKError:
    cls = getattr(errors, payload["type"], None)
    if isinstance(cls, type) and issubclass(cls, EdgeSDKError):
        return cls(payload["message"], hint=payload.get("hint"))
    return InferenceError(f"the child process raised {payload['type']}: {payload['message']}",
                          hint="this is a bug in edge-sdk or in a runtime; the traceback is on the child's stderr")


def _ref(fn: Callable[..., Any] | str) -> str:
    if isinstance(fn, str):
        return fn
    return f"{fn.__module__}:{fn.__qualname__}"


def run_supervised(fn: Callable[..., Any] | str, *args: Any, timeout: float | None = DEFAULT_LOAD_TIMEOUT,
                   **kwargs: Any) -> Any:
    """Run an importable function (or ``"module:function"``) in a child process; return its result.

    Arguments and result travel pickled, so they must be plain data (numpy arrays are fine).
    """
    child = _Child(f"supervised call {_ref(fn)}")
    try:
        child.send(("call", _ref(fn), args, kwargs))
        kind, payload = child.recv(timeout)
        child.send(("exit",))
    finally:
        if child.proc.poll() is None:
            try:
                child.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
        child.close()
    if kind == "error":
        raise _rebuild_error(payload)
    return payload


class SupervisedGenerator:
    """Like ``edge_sdk.api.Generator``, but the bundle is loaded and run in a child process.

    ``timeout`` is the watchdog: the longest the child may go without a sign of life during
    ``generate`` (it reports after every sampler step, so this bounds one step, or the decode).
    After the child dies, the next ``generate`` starts a new one (the bundle is loaded again).
    """

    def __init__(self, bundle: str | os.PathLike, *, timeout: float | None = DEFAULT_LOAD_TIMEOUT,
                 load_timeout: float | None = DEFAULT_LOAD_TIMEOUT, **load_kwargs: Any) -> None:
        self.bundle_path = os.fspath(bundle)
        self.timeout = timeout
        self.load_timeout = load_timeout
        self.load_kwargs = load_kwargs
        self._child: _Child | None = None
        self.plan: Any = None  # the child's Plan (a copy: changing it here changes nothing there)
        self.manifest: dict[str, Any] | None = None
        self._start()

    def _start(self) -> None:
        child = _Child(f"bundle {self.bundle_path}")
        try:
            child.send(("load", self.bundle_path, self.load_kwargs))
            kind, payload = child.recv(self.load_timeout)
        except BaseException:
            child.kill()
            raise
        if kind == "error":
            child.kill()
            raise _rebuild_error(payload)
        from edge_sdk.planning.plan import Plan

        self.plan, self.manifest = Plan.from_json(payload["plan"]), payload["manifest"]
        self._child = child

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def generate(self, request: Any = None, /, *, callback: Callable[[Any], bool | None] | None = None,
                 **kwargs: Any) -> Any:
        """Run ``Generator.generate(request)`` in the child (a GenerateRequest, or its fields by
        keyword, validated here before anything is sent); the result comes back here."""
        from edge_sdk.pipelines.request import GenerateRequest

        request = GenerateRequest.of(request, **kwargs)
        if self._child is None:
            self._start()
        child = self._child
        assert child is not None
        try:
            child.send(("generate", request, callback is not None))
            while True:
                kind, payload = child.recv(self.timeout)
                if kind == "step":
                    go = True
                    if callback is not None:
                        from edge_sdk.pipelines.diffusion import StepInfo

                        try:
                            go = callback(StepInfo(**payload)) is not False
                        except BaseException:
                            # The child waits for our answer; it cannot be resumed cleanly: end it.
                            child.kill()
                            self._child = None
                            raise
                        child.send(("continue", go))
                    continue
                break
        except SupervisedProcessError:
            self._child = None  # dead or killed: the next call starts a fresh child
            raise
        if kind == "error":
            raise _rebuild_error(payload)
        return payload

    def close(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        try:
            child.send(("exit",))
            child.proc.wait(timeout=10)
        except (SupervisedProcessError, subprocess.TimeoutExpired):
            pass
        child.kill()

    def __enter__(self) -> SupervisedGenerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


# -- the child side ------------------------------------------------------------------------------
def _error_payload(e: BaseException) -> dict[str, Any]:
    if isinstance(e, EdgeSDKError):
        return {"type": type(e).__name__, "message": e.message, "hint": e.hint}
    traceback.print_exc()  # ours to debug: the full traceback goes to the child's stderr
    return {"type": type(e).__name__, "message": str(e).splitlines()[0] if str(e) else ""}


def _resolve(ref: str) -> Callable[..., Any]:
    mod, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _serve(recv: Connection, send: Connection) -> None:
    gen = None
    while True:
        try:
            msg = recv.recv()
        except EOFError:  # the parent went away
            return
        op = msg[0]
        if op == "exit":
            return
        try:
            if op == "call":
                _, ref, args, kwargs = msg
                send.send(("ok", _resolve(ref)(*args, **kwargs)))
            elif op == "load":
                _, path, kwargs = msg
                # By name, like every call the child makes: edge_sdk.api imports this module.
                gen = _resolve("edge_sdk.api:load")(path, **kwargs)
                send.send(("ok", {"plan": gen.plan.to_json(), "manifest": gen.bundle.manifest}))
            elif op == "generate":
                _, request, has_callback = msg
                if gen is None:
                    raise SupervisedProcessError("generate before load in the supervised child")

                def heartbeat(info: Any, has_callback: bool = has_callback) -> bool:
                    data = {"index": info.index, "total": info.total, "timestep": info.timestep,
                            "sample": info.sample if has_callback else None,
                            "denoised": info.denoised if has_callback else None}
                    send.send(("step", data))
                    return recv.recv()[1] if has_callback else True

                send.send(("ok", gen.generate(request, callback=heartbeat)))
            else:
                raise SupervisedProcessError(f"unknown request {op!r} to the supervised child")
        except Exception as e:  # noqa: BLE001 - every error goes back to the parent, typed
            send.send(("error", _error_payload(e)))


def _main(argv: list[str]) -> None:
    recv = Connection(int(argv[0]), writable=False)
    send = Connection(int(argv[1]), readable=False)
    # The parent's Ctrl-C reaches the whole process group; let the parent decide what to do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _serve(recv, send)


if __name__ == "__main__":
    _main(sys.argv[1:])
