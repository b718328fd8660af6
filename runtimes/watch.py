"""A component call that can be stopped: Ctrl-C, and an optional deadline (hardening class 7).

A runtime's ``run`` is native code that holds the calling thread until it returns; Python only
handles SIGINT when it does, so a graph that never terminates made ``edge-sdk run`` unstoppable
by Ctrl-C. The call therefore runs in a worker thread while the calling (main) thread waits,
interruptibly, and on Ctrl-C or past ``EDGE_SDK_CALL_TIMEOUT`` seconds asks the engine to cancel
(ONNX Runtime: ``RunOptions.terminate``, checked between kernels and Loop iterations; OpenVINO:
``InferRequest.cancel``, which its CPU plugin does not honour inside a running Loop). A call that
does not stop keeps computing in its daemon thread until the process exits, which the error says;
``--isolate`` (a child killed by its watchdog) is the stronger answer, for untrusted bundles in general.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from edge_sdk.errors import InferenceError

T = TypeVar("T")
CALL_TIMEOUT_ENV = "EDGE_SDK_CALL_TIMEOUT"
CALL_TIMEOUT_BOUNDS = (0.1, 7 * 86_400.0)
CANCEL_GRACE_S = 5.0  # how long a cancelled engine may take to return


def call_timeout() -> float | None:
    """Seconds one component call may take (``EDGE_SDK_CALL_TIMEOUT``), or None: no deadline."""
    import os

    if not os.environ.get(CALL_TIMEOUT_ENV):
        return None
    from edge_sdk.bounds import seconds_from_env

    return seconds_from_env(CALL_TIMEOUT_ENV, 0.0, bounds=CALL_TIMEOUT_BOUNDS)


def watched_call(fn: Callable[[], T], cancel: Callable[[], bool] | None, *, what: str,
                 timeout: float | None = None) -> T:
    """``fn()``, stoppable by Ctrl-C (KeyboardInterrupt, after ``cancel``) and by ``timeout``."""
    main = threading.current_thread() is threading.main_thread()
    if timeout is None and not main:
        return fn()  # no signal can reach this thread, and no deadline was asked for
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
        _stop(cancel, done)
        raise
    if not finished:
        stopped = _stop(cancel, done)
        raise InferenceError(
            f"{what}: one call did not finish within {timeout:g} s ({CALL_TIMEOUT_ENV}); "
            + ("it was cancelled" if stopped else "the runtime did not stop it, so it goes on in the background "
               "until this process exits"),
            hint="the model may never terminate on this input: run untrusted bundles with --isolate "
                 "(isolate=True), or raise the limit if this board is just slow")
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
