"""The device-side Python API: ``load(bundle)`` returns a Generator; no torch needed."""

from __future__ import annotations

import os
from typing import Any

from edge_sdk.bundle import Bundle
from edge_sdk.pipelines import DiffusionPipeline, GenerationResult
from edge_sdk.plan import Plan, default_plan


class Generator:
    """An opened bundle with a plan, ready to generate. Sessions are created once and reused."""

    def __init__(self, bundle: Bundle, plan: Plan) -> None:
        self.bundle = bundle
        self.plan = plan
        self.pipeline = DiffusionPipeline(bundle, plan)

    def generate(self, **kwargs: Any) -> GenerationResult:
        """See ``DiffusionPipeline.generate`` for the arguments (steps, seed, sampler, guidance...)."""
        return self.pipeline.generate(**kwargs)

    def close(self) -> None:
        self.pipeline.close()

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(bundle: str | os.PathLike | Bundle, *, plan: Plan | None = None, runtime: str | None = None,
         precision: str | None = None, format: str | None = None, device: str = "auto",
         threads: int | None = None, verify: bool = True, isolate: bool = False,
         timeout: float | None = None) -> Generator:
    """Open (and verify) ``bundle`` and pick runtimes: from ``plan`` if given, else what is installed.

    ``isolate=True`` loads and runs it in a watched child process instead (``edge_sdk.supervise``):
    a native crash, OOM kill or a hang longer than ``timeout`` seconds becomes a
    ``SupervisedProcessError`` here rather than taking this process down.
    """
    if isolate:
        from edge_sdk.supervise import DEFAULT_LOAD_TIMEOUT, SupervisedGenerator

        if isinstance(bundle, Bundle):
            bundle = bundle.root
        return SupervisedGenerator(bundle, timeout=timeout or DEFAULT_LOAD_TIMEOUT,  # type: ignore[return-value]
                                   plan=plan, runtime=runtime, precision=precision, format=format, device=device,
                                   threads=threads, verify=verify)
    b = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle, verify=verify)
    if plan is None:
        plan = default_plan(b, runtime=runtime, precision=precision, format=format, device=device, threads=threads)
    return Generator(b, plan)
