"""The device-side Python API: ``load(bundle)`` returns a Generator; no torch needed."""

from __future__ import annotations

import os
from typing import Any

from edge_sdk.bundle import Bundle
from edge_sdk.errors import MemoryCapError, UsageError
from edge_sdk.pipelines import GenerationResult, StepCallback, pipeline_for
from edge_sdk.pipelines.request import GenerateRequest
from edge_sdk.planning.board import BoardProfile
from edge_sdk.planning.plan import Plan, default_plan


class Generator:
    """An opened bundle with a plan, ready to generate. Sessions are created once and reused.

    ``generate`` runs under the plan's memory cap (a board plan has one): a watch samples this
    process's memory and stops the run with MemoryCapError once the cap is crossed. ``watch=False``
    leaves it off (``edge_sdk.measure.bench`` measures peaks; the watch's sampling would disturb timings).
    """

    def __init__(self, bundle: Bundle, plan: Plan, *, watch: bool = True, call_timeout: float | None = None) -> None:
        self.bundle = bundle
        self.plan = plan
        self.watch = watch
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

    def generate(self, request: GenerateRequest | None = None, /, *, callback: StepCallback | None = None,
                 **options: Any) -> GenerationResult:
        """Generate the images ``request`` asks for (row ``k`` is what seed ``seed + k`` gives alone).

        The run's parameters come as a ``GenerateRequest`` or as its fields by keyword. Diffusion:
        ``steps``, ``sampler``, ``guidance`` (+ ``guidance_rescale``), ``height``/``width`` in
        pixels; ``prompt``/``negative_prompt`` or ``prompt_embeds``/``negative_prompt_embeds`` for
        text-conditioned bundles; ``class_labels`` for class-conditional ones; ``init_image`` (path
        or HWC uint8 array) and ``strength`` for img2img. GANs take seed, batch, class_labels.
        ``callback(StepInfo)`` runs after every step (progress, ``info.preview()``); return False
        to cancel (``CancelledError``).
        """
        from edge_sdk.measure.memory import MemoryWatch

        req = GenerateRequest.of(request, **options)
        cap = self.plan.memory_cap_bytes if self.watch else None
        try:
            # A no-op without a cap (no thread); with one, crossing it stops the run.
            with MemoryWatch(cap, unified=self.plan.memory_unified, where=f"this run of bundle {self.bundle.name}"):
                return self.pipeline.generate(req, callback=callback)
        except MemoryError as e:  # an allocation too big for this machine: a typed error (hardening)
            raise MemoryCapError.from_memory_error(e) from None

    def close(self) -> None:
        self.pipeline.close()

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(bundle: str | os.PathLike | Bundle, *, board: str | BoardProfile | None = None,
         plan: Plan | str | None = None, request: GenerateRequest | None = None, runtime: str | None = None,
         precision: str | None = None, format: str | None = None, device: str = "auto",
         threads: int | None = None, decoder: str | None = None, verify: bool = True, isolate: bool = False,
         timeout: float | None = None, call_timeout: float | None = None, deep_cache: int | None = None,
         deep_cache_branch: str | None = None) -> Generator:
    """Open (and verify) ``bundle``, choose its plan, and return a Generator. The one front door:
    the CLI's ``run``, ``demo``, ``bench`` and ``tune`` load through here.

    The plan, in order: ``plan`` if it is a Plan; ``"tuned"``: the plan `edge-sdk tune` stored next
    to the bundle for ``board`` (default: the detected board), required; with ``board`` (a profile
    name, a path to a profile .toml, ``"auto"`` or a BoardProfile): the planner's plan for that
    board from the runtimes installed here, fitted to the board's memory cap for ``request``'s size
    and batch (``decoder``: "full" or "tiny"); with no choice at all: a tuned plan for the detected
    board where one exists; else the first installed runtime that opens an artifact
    (``edge_sdk.planning.plan.default_plan``). ``runtime``, ``precision``, ``device`` and ``threads``
    narrow a board's plan as they narrow the default one; ``format`` does not apply to a board
    (its runtimes pick formats). A plan with a memory cap (every board plan) is enforced while
    generating: crossing it raises MemoryCapError.

    ``isolate=True`` loads and runs it in a watched child process instead (``edge_sdk.guard.supervise``):
    a native crash, OOM kill or a hang longer than ``timeout`` seconds becomes a
    ``SupervisedProcessError`` here rather than taking this process down. The child plans and
    watches the cap itself, with the same arguments.

    ``call_timeout``: seconds one component call may take (default ``EDGE_SDK_CALL_TIMEOUT``, else
    30 minutes); past it the call is stopped and ``generate`` raises ``InferenceError``. OpenVINO
    (inside a Loop) and LiteRT cannot stop a call in flight: it then goes on computing until the
    process exits, so run untrusted bundles with ``isolate=True``.

    ``deep_cache`` (N >= 1) and ``deep_cache_branch`` ("down0" or "conv_in") set the chosen plan's
    DeepCache: one full UNet run every N steps, the shallow stream parts between
    (``edge_sdk.pipelines.deep_cache``; the bundle needs ``convert --stream-parts denoiser``). N=1
    turns off a tuned plan's.
    """
    if call_timeout is not None:  # checked before anything is opened, here or in the isolated child
        from edge_sdk.runtimes.watch import call_deadline

        call_deadline(call_timeout)
    if isinstance(plan, str) and plan != "tuned":
        raise UsageError(f"plan must be a Plan or 'tuned', got {plan!r}")
    if isinstance(plan, Plan) and board is not None:
        raise UsageError("give a plan or a board to plan for, not both",
                         hint="a Plan made for a board (edge_sdk.planning.planner.plan) already carries its cap")
    if board is not None and format is not None:
        raise UsageError("a format cannot be forced on a board plan: the board's runtimes choose formats",
                         hint="pass a runtime instead, or leave the board out")
    if request is not None and not isinstance(request, GenerateRequest):
        raise UsageError(f"request must be a GenerateRequest, got {type(request).__name__}")
    if deep_cache is not None or deep_cache_branch is not None:  # bad values fail here, not in a child
        GenerateRequest(deep_cache=deep_cache, deep_cache_branch=deep_cache_branch)
    if isolate:
        from edge_sdk.guard.supervise import DEFAULT_LOAD_TIMEOUT, SupervisedGenerator

        if isinstance(bundle, Bundle):
            bundle = bundle.root
        return SupervisedGenerator(bundle, timeout=timeout or DEFAULT_LOAD_TIMEOUT,  # type: ignore[return-value]
                                   board=board, plan=plan, request=request, runtime=runtime, precision=precision,
                                   format=format, device=device, threads=threads, decoder=decoder, verify=verify,
                                   call_timeout=call_timeout, deep_cache=deep_cache,
                                   deep_cache_branch=deep_cache_branch)
    b = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle, verify=verify)
    chosen = _choose_plan(b, board=board, plan=plan, request=request, runtime=runtime, precision=precision,
                          format=format, device=device, threads=threads, decoder=decoder)
    if deep_cache is not None:
        from edge_sdk.pipelines.deep_cache import with_deep_cache

        chosen = with_deep_cache(b, chosen, deep_cache, deep_cache_branch)
    return Generator(b, chosen, call_timeout=call_timeout)


def _choose_plan(b: Bundle, *, board: str | BoardProfile | None, plan: Plan | str | None,
                 request: GenerateRequest | None, runtime: str | None, precision: str | None, format: str | None,
                 device: str, threads: int | None, decoder: str | None) -> Plan:
    if isinstance(plan, Plan):
        return plan
    if plan == "tuned":
        from edge_sdk.planning.board import load_board
        from edge_sdk.planning.tuned_plan import load_tuned_plan

        # `edge-sdk tune` stores a measured plan next to the bundle under the profile's name (edge_sdk.measure.tune).
        name = (board.name if isinstance(board, BoardProfile) else
                None if board in (None, "auto") else load_board(board).name)
        tuned = load_tuned_plan(b, name, required=True)
        assert tuned is not None
        return tuned
    if board is not None:
        from edge_sdk.planning.planner import PlanRequest
        from edge_sdk.planning.planner import plan as plan_for

        req = request or GenerateRequest()
        return plan_for(b, board, PlanRequest(
            height=req.height, width=req.width, batch=req.images(), guidance=req.guidance, runtime=runtime,
            precision=precision, installed_only=True, decoder=decoder, device=None if device == "auto" else device,
            threads=threads))
    if decoder is not None:
        raise UsageError("a decoder choice needs a board to plan for", hint="pass a board, or leave decoder out")
    if runtime is None and precision is None and format is None and device == "auto" and threads is None:
        # With no choice given, a plan `edge-sdk tune` measured on the detected board wins when one exists.
        from edge_sdk.planning.tuned_plan import load_tuned_plan

        tuned = load_tuned_plan(b)
        if tuned is not None:
            return tuned
    return default_plan(b, runtime=runtime, precision=precision, format=format, device=device, threads=threads)
