"""`edge-sdk tune`: measure the plans the planner would consider on this board, keep the fastest
that meets the quality bar, and store it next to the bundle for `run` (and ``edge_sdk.load``).

Precision is chosen by measurement, never assumed: on some CPUs dynamic int8 convolutions are
slower than fp32 while static int8 is faster (benchmarks/int8_check.py), and fp16 on a CPU without
fp16 arithmetic is emulated. So every (runtime, precision) the bundle and the board allow is a
candidate: the planner is asked for its plan with that runtime and precision forced (so memory
fitting, CFG mode, tiling and residency are the planner's), and, when only some components have
that precision, the denoiser alone takes it while the others stay fp32 (VAE decoders lose more
quality to int8 than denoisers). Each candidate is measured in a fresh process
(``edge_sdk.measure.bench``); the final image's PSNR against the board's fp32 plan on the same seed must
reach ``min_psnr`` (default 30 dB).

Where the result goes: ``<bundle's parent>/<bundle folder name>.tuned-<board>.json``, a sibling
file, never inside the bundle (whose every file is hashed in its manifest). It records the
manifest's sha256: a tuned plan of another bundle, or of this bundle before it was converted
again, is ignored (and refused when asked for explicitly).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_sdk.bundle import Bundle
from edge_sdk.errors import PlanError, RuntimeUnavailableError, UsageError
from edge_sdk.measure.bench import (
    DEFAULT_MIN_SECONDS,
    DEFAULT_REPEATS,
    DEFAULT_WARMUP,
    BenchResult,
    attach_quality,
    fmt_psnr,
    machine_info,
    measure,
    plan_label,
)
from edge_sdk.planning.plan import PRECISION_ORDER, Plan, usable_runtimes
from edge_sdk.planning.tuned_plan import (  # noqa: F401 - the reading side, importable from here as before
    NATIVE_OPTIONS,
    TUNED_SCHEMA,
    _manifest_sha,
    load_tuned_plan,
    tuned_plan_path,
)

DEFAULT_MIN_PSNR = 30.0
# DeepCache intervals tried on top of the fastest plan that meets the bar (edge_sdk.pipelines.deep_cache).
DEFAULT_DEEP_CACHE = (2, 3, 5)
ProgressFn = Callable[[int, int, str], None]


@dataclass
class TuneResult:
    board: str
    path: Path | None
    chosen: BenchResult | None
    candidates: list[BenchResult]
    min_psnr: float
    settings: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"board": self.board, "path": str(self.path) if self.path else None, "min_psnr": self.min_psnr,
                "chosen": self.chosen.label if self.chosen else None, "settings": self.settings,
                "machine": self.machine, "candidates": [c.to_json() for c in self.candidates]}


# -- candidates ------------------------------------------------------------------------------------
def _with_precisions(bundle: Bundle, plan: Plan, precisions: dict[str, str]) -> Plan | None:
    """``plan`` with some components switched to another precision in a format their runtime opens."""
    from edge_sdk.runtimes.registry import runtime_formats

    comps = dict(plan.components)
    for name, prec in precisions.items():
        cp = comps[name]
        fmts = [cp.format] + [f for f in runtime_formats(cp.runtime) if f != cp.format]
        have = {(a.format, a.precision) for a in bundle.artifacts(name) if a.variant == cp.variant}
        fmt = next((f for f in fmts if (f, prec) in have), None)
        if fmt is None:
            return None
        comps[name] = replace(cp, format=fmt, precision=prec)
    return replace(plan, components=comps, notes=list(plan.notes))


def candidate_plans(bundle: Bundle, board: Any, *, width: int | None = None, height: int | None = None,
                    guidance: float | None = None, runtimes: Iterable[str] | None = None,
                    precisions: Iterable[str] | None = None, threads: int | None = None,
                    measure_memory: bool = True) -> tuple[list[Plan], list[str]]:
    """The plans to measure (the fp32 reference first) and notes on what was skipped and why.

    Not ``edge_sdk.load``'s choice: tuning must see every (runtime, precision) the board allows,
    so it asks the planner once per pair with that pair forced, instead of taking the one plan the
    front door would pick. Each candidate is then loaded through the front door (``bench.measure``)."""
    from edge_sdk.planning.planner import PlanRequest, plan

    usable = usable_runtimes()
    want_rt = list(runtimes) if runtimes else None
    main = "denoiser" if "denoiser" in bundle.components else bundle.components[0]
    bundle_precs = [p for p in PRECISION_ORDER if any(a.precision == p for a in bundle.artifacts(main))]
    precs = [p for p in bundle_precs if not precisions or p in set(precisions)]
    plans: list[Plan] = []
    notes: list[str] = []
    seen: set[str] = set()
    rts = []
    for runtime, _device in board.runtimes:
        if runtime not in rts and (not want_rt or runtime in want_rt):
            rts.append(runtime)
    for runtime in rts:
        if runtime not in usable:
            notes.append(f"{runtime}: not installed here")
            continue
        req = PlanRequest(width=width, height=height, guidance=guidance, runtime=runtime, installed_only=True,
                          measure=measure_memory)
        try:
            base = plan(bundle, board, replace(req, precision="fp32" if "fp32" in bundle_precs else None))
        except PlanError as e:
            notes.append(f"{runtime}: the planner found no plan ({e.message})")
            continue
        for prec in (["fp32"] if "fp32" in bundle_precs else []) + [p for p in precs if p != "fp32"]:
            if prec == "fp32":
                options = [base]
            else:
                options = []
                try:
                    options.append(plan(bundle, board, replace(req, precision=prec)))
                except PlanError:  # some component lacks this precision: the denoiser alone takes it
                    pass
                mixed = _with_precisions(bundle, base, {main: prec}) if main in base.components else None
                if mixed is not None:
                    options.append(mixed)
            if not options:
                notes.append(f"{runtime} {prec}: no component can run it")
            if prec in REDUCED_WEIGHTS:
                # fp16 weights computed in bf16 too: about the speed of fp32 weights in bf16, and
                # OpenVINO holds half the source weights (lower peak on a compiled-model cache hit,
                # higher when compiled from the IR; benchmarks/RESULTS.md): measured, not assumed.
                options += [r for o in options for r in _reduced_compute(o, notes if prec == "fp32" else [])]
            for p in options:
                if threads is not None:
                    p.components = {k: replace(c, threads=threads) for k, c in p.components.items()}
                key = json.dumps(p.to_json()["components"], sort_keys=True) + p.cfg + str(p.decode_tiling)
                if key not in seen:
                    seen.add(key)
                    plans.append(p)
    if not plans:
        raise PlanError(f"no plan of bundle {bundle.name} can run on board {board.name} here",
                        hint="; ".join(notes) or "convert the bundle for a runtime installed here")
    return plans, notes


# Weight precisions whose plans are also tried with the runtimes' tune options (speed, bf16 arithmetic).
REDUCED_WEIGHTS = ("fp32", "fp16")

# Components that may compute in reduced precision (bf16): the per-step denoiser, and the decoder
# as a second candidate. Text encoders stay f32: CLIP's causal mask (float32's lowest value) overflows bf16 to
# -inf and the OpenVINO text encoder then returns NaN (measured on the SD-shaped folder).
REDUCED_COMPONENTS = (("denoiser",), ("denoiser", "decoder"))


def _reduced_compute(plan: Plan, notes: list[str]) -> list[Plan]:
    """``plan`` with each component's runtime's speed-only tune options (OpenVINO on the CPU:
    compiled once per fed shape), and beside it, where the runtime offers reduced-precision
    arithmetic here (OpenVINO: bf16 on a CPU that has it), the same with the denoiser (then also the
    decoder) computing that way (fp32 weights). Quality is then measured like any other candidate's."""
    from edge_sdk.runtimes.registry import get_runtime

    speed, reduced = {}, {}
    for k, c in plan.components.items():
        try:
            fast, slim = get_runtime(c.runtime).tune_options(c.device)
        except (RuntimeUnavailableError, UsageError):  # a runtime not loadable here has nothing to add
            continue
        if fast:
            speed[k] = fast
        if slim:
            reduced[k] = slim
    if not speed and not reduced:
        return []
    # The plan with speed options only, then each distinct non-empty set of reduced components.
    variants: list[tuple[str, ...]] = [()]
    for names in REDUCED_COMPONENTS:
        low = tuple(k for k in names if k in reduced)
        if low and low not in variants:
            variants.append(low)
    if not reduced:
        notes.append(f"no reduced-precision arithmetic on this CPU for {', '.join(sorted(speed))}")
    out = []
    for low in variants:
        comps = {k: replace(c, options={**c.options, **speed.get(k, {}), **(reduced[k] if k in low else {})})
                 if k in speed or k in low else c for k, c in plan.components.items()}
        out.append(replace(plan, components=comps, notes=list(plan.notes)))
    return out


def full_precision(plan: dict[str, Any]) -> bool:
    """Every component fp32 in its weights and its arithmetic, every step computed: a quality reference."""
    return all(c["precision"] == "fp32" and (c.get("options") or {}).get("inference_precision") in (None, "f32")
               and not c.get("deep_cache") for c in plan["components"].values())


def deep_cache_plans(bundle: Bundle, plan: Plan, intervals: Iterable[int], notes: list[str]) -> list[Plan]:
    """``plan`` with DeepCache at each interval (> 1) on each branch, where the denoiser has stream
    parts in its format and precision; none (and a note saying how to get them) where it has not.
    Both branches: neither wins everywhere (on the SD-shaped UNet conv_in at N=2 was faster and
    closer to the full run than down0 at N=5; benchmarks/RESULTS.md, "DeepCache")."""
    from edge_sdk.pipelines.deep_cache import BRANCHES, with_deep_cache

    wanted = sorted({int(n) for n in intervals if int(n) > 1})
    cp = plan.components.get("denoiser")
    if not wanted or cp is None:
        return []
    if not bundle.stream_parts("denoiser", cp.format, cp.precision):
        notes.append(f"DeepCache not tried: the denoiser has no {cp.format}/{cp.precision} stream parts "
                     "(convert with --stream-parts denoiser)")
        return []
    return [with_deep_cache(bundle, plan, n, branch) for n in wanted for branch in BRANCHES]


# -- tuning ------------------------------------------------------------------------------------------
def tune(bundle: str | os.PathLike | Bundle, board: str | None = None, *, steps: int | None = None,
         size: tuple[int, int] | None = None, seed: int = 0, guidance: float | None = None,
         min_psnr: float = DEFAULT_MIN_PSNR, runtimes: Iterable[str] | None = None,
         precisions: Iterable[str] | None = None, threads: int | None = None, warmup: int = DEFAULT_WARMUP,
         repeats: int = DEFAULT_REPEATS, min_seconds: float = DEFAULT_MIN_SECONDS, isolate: bool = True,
         measure_memory: bool = True, write: bool = True, deep_cache: Iterable[int] = DEFAULT_DEEP_CACHE,
         progress: ProgressFn | None = None) -> TuneResult:
    """Measure the candidate plans for ``board`` (default: detected) and store the fastest one whose
    final image is within ``min_psnr`` dB of the fp32 plan's. Raises PlanError if none is.

    Then DeepCache (``deep_cache`` intervals; () for none) is tried on top of that fastest plan, as
    more candidates held to the same bar against the same reference: it is an approximation whose
    loss adds to the plan's own, so it is tried on the plan it would speed up."""
    from edge_sdk.planning.board import load_board, usable_cpus
    from edge_sdk.planning.board_detect import detect_board

    b = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    if not (isinstance(min_psnr, (int, float)) and min_psnr > 0):
        raise UsageError(f"the quality bar must be a positive number of dB, got {min_psnr!r}")
    if board in (None, "auto"):
        board, _why = detect_board()
        if board is None:
            raise PlanError("no board profile matches this machine", hint="pass --board NAME (edge-sdk boards)")
    profile = load_board(board)
    if threads is None:  # the profile's count, but never more threads than this machine gives us
        threads = min(profile.threads, usable_cpus())
    width, height = size if size else (None, None)
    steps = int(steps or b.sampler.get("default_steps", 20))
    plans, notes = candidate_plans(b, profile, width=width, height=height, guidance=guidance, runtimes=runtimes,
                                   precisions=precisions, threads=threads, measure_memory=measure_memory)
    results: list[BenchResult] = []
    kw = dict(seed=seed, width=width, height=height, guidance=guidance, warmup=warmup, repeats=repeats,
              min_seconds=min_seconds)
    for i, p in enumerate(plans):
        label = plan_label(p)
        if progress:
            progress(i, len(plans), label)
        results.append(measure(b.root, p, label=label, steps=steps, isolate=isolate, **kw))
    ref = next((r for r, p in zip(results, plans, strict=False) if r.ok and full_precision(p.to_json())), None)
    if ref is None:
        raise PlanError(f"the fp32 reference plan of {b.name} did not run on this machine, so quality cannot be "
                        "checked", hint="; ".join(r.error or "" for r in results if not r.ok) or
                        "convert the bundle with fp32 artifacts")
    attach_quality(results, {steps: ref})
    ok = [r for r in results if r.ok and r.psnr_db is not None and r.psnr_db >= min_psnr]
    chosen = min(ok, key=lambda r: r.end_to_end_ms) if ok else None
    extra = deep_cache_plans(b, Plan.from_json(chosen.plan), deep_cache, notes) if chosen is not None else []
    for i, p in enumerate(extra):
        label = plan_label(p)
        if progress:
            progress(len(plans) + i, len(plans) + len(extra), label)
        results.append(measure(b.root, p, label=label, steps=steps, isolate=isolate, **kw))
    if extra:
        attach_quality(results[-len(extra):], {steps: ref})
        ok = [r for r in results if r.ok and r.psnr_db is not None and r.psnr_db >= min_psnr]
        chosen = min(ok, key=lambda r: r.end_to_end_ms)
    if progress:
        progress(len(results), len(results), "done")
    settings = {"steps": steps, "size": list(size) if size else None, "seed": seed, "guidance": guidance,
                "threads": threads, "warmup": warmup, "repeats": repeats, "min_seconds": min_seconds,
                "deep_cache": sorted({int(n) for n in deep_cache}),
                "reference": ref.label, "notes": notes}
    res = TuneResult(board=profile.name, path=None, chosen=chosen, candidates=results, min_psnr=min_psnr,
                     settings=settings, machine=machine_info())
    if chosen is None:
        raise PlanError(f"no candidate plan reached {min_psnr} dB against fp32 on {profile.name}",
                        hint="lower --min-psnr, or convert with more precisions")
    if write:
        res.path = write_tuned_plan(b, res)
    return res


def write_tuned_plan(bundle: Bundle, res: TuneResult) -> Path:
    """Write the chosen plan and what it was chosen from (atomically) next to the bundle."""
    from edge_sdk import __version__
    from edge_sdk.guard.fsutil import atomic_write

    assert res.chosen is not None
    plan = Plan.from_json(res.chosen.plan)
    plan.board = res.board
    plan.notes = list(plan.notes) + [
        f"tuned on {res.machine.get('cpu_model', '?')} at {res.settings['steps']} steps: "
        f"{res.chosen.end_to_end_ms:.1f} ms end to end, PSNR {fmt_psnr(res.chosen.psnr_db)} dB vs "
        f"{res.settings['reference']} (bar {res.min_psnr} dB)"]
    doc = {"schema": TUNED_SCHEMA, "kind": "edge-sdk-tuned-plan", "board": res.board, "bundle": bundle.name,
           "manifest_sha256": _manifest_sha(bundle), "edge_sdk": __version__,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "min_psnr": res.min_psnr,
           "chosen": res.chosen.label, "plan": plan.to_json(), "settings": res.settings, "machine": res.machine,
           "candidates": [{k: v for k, v in c.to_json().items() if k != "plan"} for c in res.candidates]}
    path = tuned_plan_path(bundle.root, res.board)
    with atomic_write(path, "w") as f:
        json.dump(doc, f, indent=2, default=_json_default)
        f.write("\n")
    return path


def _json_default(v: Any) -> Any:
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return str(v)
