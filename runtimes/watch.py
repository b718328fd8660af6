"""A component call that can be stopped: Ctrl-C, and a deadline that always applies (hardening class 7).

A runtime's ``run`` is native code that holds the calling thread until it returns; Python only
handles SIGINT when it does, so a graph that never terminates made ``edge-sdk run`` unstoppable
by Ctrl-C. The call therefore runs in a worker thread while the calling thread waits,
interruptibly, and on Ctrl-C or past the call deadline asks the engine to cancel (ONNX Runtime:
``RunOptions.terminate``, checked between kernels and Loop iterations; OpenVINO:
``InferRequest.cancel``, checked between nodes, but not inside a running Loop or TensorIterator
on its CPU plugin; LiteRT's Python interpreter has no cancel at all).

The deadline (``call_deadline``) is the caller's ``call_timeout`` / ``--call-timeout``, else
``EDGE_SDK_CALL_TIMEOUT``, else ``DEFAULT_CALL_TIMEOUT``: a fixed ceiling, since a plan holds no
time estimate to scale from, set far above any honest single call on the boards we support.

A call the engine does not stop within ``CANCEL_GRACE_S`` is a *runaway*: it keeps computing in
its daemon thread, and nothing can end it but the end of the process. It is recorded here
(``runaway_calls``): the runtime that made it refuses further calls (its engine is still busy),
the CLI ends its process right after printing the error (``edge_sdk.cli.main``), and API users
are told to use ``isolate=True``, whose child process is killed instead.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

from edge_sdk.errors import InferenceError

T = TypeVar("T")
CALL_TIMEOUT_ENV = "EDGE_SDK_CALL_TIMEOUT"
CALL_TIMEOUT_OPTION = "--call-timeout (call_timeout=)"
CALL_TIMEOUT_BOUNDS = (0.1, 7 * 86_400.0)
# 30 minutes for ONE component call: a full-size UNet or VAE call on a slow ARM board takes
# seconds to a few minutes; a call still running after 30 is taken for a graph that never ends.
DEFAULT_CALL_TIMEOUT = 1800.0
CANCEL_GRACE_S = 2.0  # how long a cancelled engine may take to return
_runaway: list[str] = []  # calls that are still computing after their engine was asked to stop


def call_deadline(explicit: float | None = None) -> tuple[float, str]:
    """(seconds one component call may take, where that number came from): ``explicit`` (the
    caller's option), else ``EDGE_SDK_CALL_TIMEOUT``, else ``DEFAULT_CALL_TIMEOUT``."""
    from edge_sdk.guard.bounds import check_seconds, seconds_from_env

    if explicit is not None:
        return check_seconds(explicit, option=CALL_TIMEOUT_OPTION, bounds=CALL_TIMEOUT_BOUNDS), CALL_TIMEOUT_OPTION
    if os.environ.get(CALL_TIMEOUT_ENV):
        return seconds_from_env(CALL_TIMEOUT_ENV, DEFAULT_CALL_TIMEOUT, bounds=CALL_TIMEOUT_BOUNDS), CALL_TIMEOUT_ENV
    return DEFAULT_CALL_TIMEOUT, "the default call deadline"


def runaway_calls() -> list[str]:
    """The calls of this process that outlived their deadline and could not be stopped."""
    return list(_runaway)


def watched_call(fn: Callable[[], T], cancel: Callable[[], bool] | None, *, what: str,
                 timeout: float, source: str = CALL_TIMEOUT_ENV,
                 on_runaway: Callable[[], None] | None = None) -> T:
    """``fn()``, stoppable by Ctrl-C (KeyboardInterrupt, after ``cancel``) and by ``timeout`` seconds
    (``source`` names where that number came from, for the error). ``on_runaway`` is called when
    the engine did not stop the call."""
    box: dict[str, object] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread as it is
            box["error"] = e
        finally:
            done.set()

    worker = threading.Thread(target=work, name=f"edge-sdk call {what}", daemon=True)
    worker.start()
    try:
        finished = done.wait(timeout)  # interruptible by SIGINT in the main thread
    except KeyboardInterrupt:
        if not _stop(cancel, done):
            _runaway_seen(what, on_runaway)
        raise
    if not finished:
        stopped = _stop(cancel, done)
        message = f"{what}: one call did not finish within {timeout:g} s ({source}); "
        hint = ("the model may never terminate on this input: run untrusted bundles with --isolate (isolate=True); "
                f"if this board is just slow, raise {CALL_TIMEOUT_OPTION} or {CALL_TIMEOUT_ENV} "
                f"(default {DEFAULT_CALL_TIMEOUT:g} s)")
        if stopped:
            raise InferenceError(message + "it was cancelled", hint=hint)
        _runaway_seen(what, on_runaway)
        raise InferenceError(message + "the runtime did not stop it when asked, so it goes on computing until this "
                                       "process exits, and this model's session refuses further calls", hint=hint)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _stop(cancel: Callable[[], bool] | None, done: threading.Event) -> bool:
    """Cancel the call in flight; True once the engine has returned."""
    try:
        asked = cancel is not None and cancel()
    except Exception:  # noqa: BLE001 - cancelling is best effort; the caller is told either way
        asked = False
    return bool(asked) and done.wait(CANCEL_GRACE_S)


def _runaway_seen(what: str, on_runaway: Callable[[], None] | None) -> None:
    _runaway.append(what)
    if on_runaway is not None:
        on_runaway()
