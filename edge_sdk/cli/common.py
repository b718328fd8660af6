"""What every command shares: error reporting, JSON output, progress display."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click

from edge_sdk.errors import EdgeSDKError, MemoryCapError, UsageError
from edge_sdk.guard.interrupt import Interrupted
from edge_sdk.names import for_terminal, for_terminal_lines


def parse_size(value: str | None) -> tuple[int, int] | None:
    """``--size WIDTHxHEIGHT`` -> (width, height) in pixels; None when not given. Whether the model
    takes that size is the planner's and the pipeline's to say."""
    if not value:
        return None
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 512x512", param_hint="--size") from None
    for v, axis in ((w, "width"), (h, "height")):
        if v <= 0:  # the model's own wording (pipeline, planner): one message for one mistake
            raise UsageError(f"{axis} {v} does not fit this model", hint="--size takes positive WIDTHxHEIGHT pixels")
    return w, h


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
quiet_option = click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")


def run_cli(group: click.Group, argv: list[str] | None) -> int:
    """Run the click group; edge-sdk errors become one line on stderr and their exit code."""
    try:
        group.main(args=argv, prog_name="edge-sdk", standalone_mode=False)
        return 0
    except EdgeSDKError as e:
        click.echo(f"error: {for_terminal(e.message)}" + (f"\n  hint: {for_terminal(e.hint)}" if e.hint else ""),
                   err=True)
        return e.exit_code
    except click.exceptions.Abort as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, Interrupted):  # click turns every KeyboardInterrupt into Abort
            click.echo(f"interrupted ({cause}); nothing was written, an existing output is unchanged", err=True)
            return cause.exit_code
        click.echo("aborted", err=True)
        return 130
    except Interrupted as e:  # SIGINT/SIGTERM during convert: nothing was published
        click.echo(f"interrupted ({e}); nothing was written, an existing output is unchanged", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except BrokenPipeError:
        return 0
    except MemoryError as e:  # an allocation too big for this machine is the input's fault, not a bug
        err = MemoryCapError.from_memory_error(e)
        click.echo(f"error: {err.message}\n  hint: {err.hint}", err=True)
        return err.exit_code
    except Exception as e:  # a bug of ours: one line by default, the traceback on request
        if os.environ.get("EDGE_SDK_DEBUG"):
            raise
        click.echo(f"internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}\n"
                   "  hint: this is a bug in edge-sdk; rerun with EDGE_SDK_DEBUG=1 for the traceback "
                   "and report it", err=True)
        return 70


def say(message: Any = "", **kwargs: Any) -> None:
    """click.echo for human output: control characters in names, paths and messages are shown as
    escapes (names.for_terminal), so a crafted bundle or package cannot drive the terminal."""
    click.echo(for_terminal_lines(str(message)), **kwargs)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(rows: list[tuple[Any, ...]], headers: tuple[str, ...] | None = None) -> str:
    """A plain aligned text table."""
    cells = [tuple(str(c) for c in r) for r in ([headers] if headers else []) + rows]
    if not cells:
        return ""
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(max(len(r) for r in cells))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in cells]
    if headers:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def progress_enabled(quiet: bool = False) -> bool:
    return not quiet and sys.stderr.isatty() and os.environ.get("EDGE_SDK_NO_PROGRESS") is None


class StageProgress:
    """Conversion progress: one line per (component, format, precision) and stage on stderr.

    A terminal gets the stage rewritten in place, a log every stage on its own line; silent with
    --quiet.
    """

    def __init__(self, enabled: bool, live: bool) -> None:
        self.enabled = enabled
        self.live = live
        self.t0 = time.perf_counter()

    def __call__(self, component: str, fmt: str, prec: str, stage: str) -> None:
        if not self.enabled:
            return
        stamp = f"{time.perf_counter() - self.t0:7.1f}s"
        label = f"{component:<12} {fmt:<9} {prec:<18}" if component else ("source" if stage == "load" else "bundle")
        line = f"{stamp}  {label} {stage}"
        if stage not in ("done", "failed", "write"):
            self._echo(line, final=False)
            return
        # Memory after each artifact: big models (SD at full size) are bounded by RAM, not time.
        from edge_sdk.measure.memory import peak_rss_bytes, rss_bytes

        mem = f"{stamp}  {label} memory rss {rss_bytes() / 2**30:.2f} GiB, peak {peak_rss_bytes() / 2**30:.2f} GiB"
        for ln in ((mem, line) if stage == "write" else (line, mem)):  # the write line stays last
            self._echo(ln, final=True)

    def _echo(self, line: str, final: bool) -> None:
        if self.live:
            click.echo("\r\033[K" + line, err=True, nl=final)
        else:
            click.echo(line, err=True)

    def close(self) -> None:
        if self.enabled and self.live:
            click.echo("", err=True, nl=False)


class StepBar:
    """A click progress bar on stderr, for per-step callbacks; silent when not a terminal."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self._bar = click.progressbar(length=total, label=label, file=sys.stderr) if enabled else None
        if self._bar is not None:
            self._bar.__enter__()

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
