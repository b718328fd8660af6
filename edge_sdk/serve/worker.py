"""One worker thread in front of the Generator, with a bounded queue and per-job cancellation.

Sessions are not safe to run from several threads at once and a board has one accelerator, so
jobs run one at a time; ``max_queue`` more may wait. A job whose client went away is cancelled at
the next sampler step (the pipeline's callback returns False).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from edge_sdk.errors import EdgeSDKError

T = TypeVar("T")


class QueueFullError(EdgeSDKError):
    """Every worker slot and queue place is taken: answered with 429 and Retry-After."""

    exit_code = 1


class ShuttingDownError(EdgeSDKError):
    """The server is stopping and takes no new work: answered with 503."""

    exit_code = 1


class Job:
    """A handle the running code polls: ``cancelled`` turns True when the client disconnects."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class Worker:
    def __init__(self, max_queue: int, on_depth: Callable[[int], None] | None = None) -> None:
        if max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        self.max_queue = max_queue
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-sdk-serve")
        self._pending = 0  # running + waiting; only touched on the event loop's thread
        self._on_depth = on_depth or (lambda _n: None)
        self.accepting = True

    @property
    def depth(self) -> int:
        """Jobs waiting (not counting the one running)."""
        return max(0, self._pending - 1)

    @property
    def busy(self) -> int:
        return self._pending

    def admit(self) -> Job:
        """Take a place (running or waiting) or refuse at once: the queue is full, or we are stopping.

        Every admitted job must then go through ``run`` exactly once, which gives the place back.
        """
        if not self.accepting:
            raise ShuttingDownError("the server is shutting down and takes no new requests",
                                    hint="retry against another instance or after the restart")
        if self._pending >= 1 + self.max_queue:
            raise QueueFullError(f"the queue is full ({self._pending - 1} waiting, {self.max_queue} allowed, "
                                 "1 running)", hint="retry later (see Retry-After)")
        self._pending += 1
        self._on_depth(self.depth)
        return Job()

    async def run(self, job: Job, fn: Callable[[Job], T]) -> T:
        """Run ``fn(job)`` on the worker thread for an admitted ``job``."""
        try:
            fut = self._pool.submit(self._guard, fn, job)
            try:
                return await asyncio.wrap_future(fut)
            except asyncio.CancelledError:
                # The request task was cancelled (forced shutdown): stop the job at its next step.
                job.cancel()
                fut.cancel()
                raise
        finally:
            self._pending -= 1
            self._on_depth(self.depth)

    @staticmethod
    def _guard(fn: Callable[[Job], Any], job: Job) -> Any:
        if job.cancelled:  # cancelled while it waited: never start it
            from edge_sdk.errors import CancelledError

            raise CancelledError("the request was cancelled before it started")
        return fn(job)

    def close(self, wait: bool = True) -> None:
        self.accepting = False
        self._pool.shutdown(wait=wait, cancel_futures=True)
