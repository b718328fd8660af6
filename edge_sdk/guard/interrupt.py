"""SIGINT/SIGTERM during long work (convert): stop the whole operation, never take it for a failure.

Converters catch broad exceptions from exporters to try a fallback; an exporter may turn a
``KeyboardInterrupt`` into its own error type. So the signal is recorded here when it arrives, and
every broad ``except`` that could fall back or skip calls ``check()`` first: a recorded signal is
re-raised as ``Interrupted`` (a ``KeyboardInterrupt``, so no ``except Exception`` swallows it), the
writer's temporary folder is removed, and the old bundle stays. The CLI exits 128 + signal number
(130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_pending: int | None = None


class Interrupted(KeyboardInterrupt):
    """The operation was stopped by a signal; ``exit_code`` is 128 + its number.

    A ``KeyboardInterrupt`` (so code that handles Ctrl-C handles it), hence no ``except Exception``
    swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


def check() -> None:
    """Raise ``Interrupted`` if a signal arrived while ``stop_on_signals`` was active."""
    if _pending is not None:
        raise Interrupted(_pending)


def _handler(signum: int, _frame) -> None:
    global _pending
    _pending = signum
    raise Interrupted(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into ``Interrupted`` for the duration (main thread only)."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _pending = None
    old = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _pending = None


def stops_on_signals(fn: F) -> F:
    """Decorator: run ``fn`` inside ``stop_on_signals()``."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with stop_on_signals():
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]
