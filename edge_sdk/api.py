"""The device-side Python API: ``load(bundle)`` returns a Generator; no torch needed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from edge_sdk.bundle import Bundle
from edge_sdk.errors import MemoryCapError
from edge_sdk.pipelines import GenerationResult, StepCallback, pipeline_for
from edge_sdk.plan import Plan, default_plan


class Generator:
    """An opened bundle with a plan, ready to generate. Sessions are created once and reused."""

    def __init__(self, bundle: Bundle, plan: Plan, *, call_timeout: float | None = None) -> None:
        self.bundle = bundle
        self.plan = plan
        self.pipeline = pipeline_for(bundle, plan)
        self.call_timeout = call_timeout

    @property
    def call_timeout(self) -> float | None:
        """Seconds one component call may take before it is stopped with an ``InferenceError``
        (None: ``EDGE_SDK_CALL_TIMEOUT``, else the default; ``edge_sdk.runtimes.watch``)."""
        return self.pipeline.sessions.call_timeout

    @call_timeout.setter
    def call_timeout(self, seconds: float | None) -> None:
        from edge_sdk.runtimes.watch import call_deadline

        if seconds is not None:
            seconds, _ = call_deadline(seconds)  # a bad value is a UsageError now, not at the first call
        self.pipeline.sessions.call_timeout = seconds

    def generate(self, *, steps: int | None = None, seed: int = 0, sampler: str | None = None,
                 guidance: float | None = None, guidance_rescale: float = 0.0,
                 class_labels: Sequence[int] | None = None, batch: int | None = None,
                 height: int | None = None, width: int | None = None,
                 prompt: str | Sequence[str] | None = None, negative_prompt: str | Sequence[str] | None = None,
                 prompt_embeds: Any = None, negative_prompt_embeds: Any = None,
                 init_image: str | os.PathLike | Any = None, strength: float | None = None,
                 callback: StepCallback | None = None) -> GenerationResult:
        """Generate ``batch`` images (row ``k`` is what seed ``seed + k`` gives alone).

        Diffusion: ``steps``, ``sampler``, ``guidance`` (+ ``guidance_rescale``), ``height``/``width``
        in pixels; ``prompt``/``negative_prompt`` or ``prompt_embeds``/``negative_prompt_embeds``
        for text-conditioned bundles; ``class_labels`` for class-conditional ones; ``init_image``
        (path or HWC uint8 array) and ``strength`` for img2img. GANs take seed, batch, class_labels.
        ``callback(StepInfo)`` runs after every step (progress, ``info.preview()``); return False
        to cancel (``CancelledError``).
        """
        kwargs = dict(steps=steps, sampler=sampler, guidance=guidance, height=height, width=width, prompt=prompt,
                      negative_prompt=negative_prompt, prompt_embeds=prompt_embeds,
                      negative_prompt_embeds=negative_prompt_embeds, init_image=init_image, strength=strength)
        try:
            return self.pipeline.generate(seed=seed, batch=batch, class_labels=class_labels, callback=callback,
                                          guidance_rescale=guidance_rescale, **kwargs)
        except MemoryError as e:  # an allocation too big for this machine: a typed error (hardening)
            raise MemoryCapError("not enough memory for this run "
                                 f"({str(e).splitlines()[0] if str(e) else 'MemoryError'})",
                                 hint="use a smaller --size or --batch, or a plan for this board with tiled "
                                      "decoding") from None

    def close(self) -> None:
        self.pipeline.close()

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(bundle: str | os.PathLike | Bundle, *, plan: Plan | str | None = None, runtime: str | None = None,
         precision: str | None = None, format: str | None = None, device: str = "auto",
         threads: int | None = None, verify: bool = True, isolate: bool = False,
         timeout: float | None = None, call_timeout: float | None = None) -> Generator:
    """Open (and verify) ``bundle`` and pick runtimes: from ``plan`` if given (``"tuned"``: the plan
    `edge-sdk tune` stored next to the bundle), else a tuned plan for this board if one exists, else
    what is installed.

    ``isolate=True`` loads and runs it in a watched child process instead (``edge_sdk.supervise``):
    a native crash, OOM kill or a hang longer than ``timeout`` seconds becomes a
    ``SupervisedProcessError`` here rather than taking this process down.

    ``call_timeout``: seconds one component call may take (default ``EDGE_SDK_CALL_TIMEOUT``, else
    30 minutes); past it the call is stopped and ``generate`` raises ``InferenceError``. OpenVINO
    (inside a Loop) and LiteRT cannot stop a call in flight: it then goes on computing until the
    process exits, so run untrusted bundles with ``isolate=True``.
    """
    if call_timeout is not None:  # checked before anything is opened, here or in the isolated child
        from edge_sdk.runtimes.watch import call_deadline

        call_deadline(call_timeout)
    if isolate:
        from edge_sdk.supervise import DEFAULT_LOAD_TIMEOUT, SupervisedGenerator

        if isinstance(bundle, Bundle):
            bundle = bundle.root
        return SupervisedGenerator(bundle, timeout=timeout or DEFAULT_LOAD_TIMEOUT,  # type: ignore[return-value]
                                   plan=plan, runtime=runtime, precision=precision, format=format, device=device,
                                   threads=threads, verify=verify, call_timeout=call_timeout)
    if isinstance(plan, str) and plan != "tuned":
        from edge_sdk.errors import UsageError

        raise UsageError(f"plan must be a Plan or 'tuned', got {plan!r}")
    b = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle, verify=verify)
    if plan == "tuned" or (plan is None and runtime is None and precision is None and format is None
                           and device == "auto" and threads is None):
        # `edge-sdk tune` stores a measured plan next to the bundle (edge_sdk.tune): "tuned" requires
        # it; with no choice given it is used when one exists for the detected board.
        from edge_sdk.tuned_plan import load_tuned_plan

        plan = load_tuned_plan(b, required=plan == "tuned")
    if plan is None:
        plan = default_plan(b, runtime=runtime, precision=precision, format=format, device=device, threads=threads)
    return Generator(b, plan, call_timeout=call_timeout)
