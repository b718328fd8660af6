"""Measuring a bundle: latency per component and end to end, peak memory, and quality vs fp32.

``bench(bundle, runtimes=..., precisions=..., steps=...)`` measures every configuration
(runtime x format x precision the bundle can run here) at every step count. Each configuration
runs in a fresh child process (``edge_sdk.guard.supervise``), so its peak resident memory (the kernel's
VmHWM) is its own and a runtime that crashes natively costs one row, not the whole run. In the
child: one warm-up generation (sessions created, caches filled), then ``repeats`` timed ones on the
same seed. Every call of every runtime session is timed; the report gives median and p90 per
component, the median end-to-end time, the median time per sampler step, and the final image's
PSNR against the fp32 reference configuration on the same seed, steps and size.

``measure_plan`` is the one-configuration measurement; ``edge_sdk.measure.tune`` uses it for plans.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.errors import EdgeSDKError, UsageError
from edge_sdk.planning.plan import PRECISION_ORDER, Plan, default_plan, usable_runtimes

DEFAULT_REPEATS = 3
DEFAULT_WARMUP = 1
DEFAULT_MIN_SECONDS = 1.0
MAX_REPEATS = 200
CHILD_TIMEOUT_S = 1800.0
ProgressFn = Callable[[int, int, str], None]  # (index, total, label)


@dataclass(frozen=True)
class BenchConfig:
    """One backend to measure: every component runs ``format``/``precision`` on ``runtime`` where
    the bundle has that artifact, else the same format's fp32 (the plan records which)."""

    runtime: str
    format: str
    precision: str
    device: str = "auto"

    @property
    def label(self) -> str:
        return f"{self.runtime}:{self.format}/{self.precision}"


@dataclass
class BenchResult:
    label: str
    steps: int
    plan: dict[str, Any]
    ok: bool = True
    error: str | None = None
    components: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> calls, median_ms, p90_ms
    end_to_end_ms: float | None = None  # median of the timed generations
    end_to_end_p90_ms: float | None = None
    end_to_end_min_ms: float | None = None  # the least disturbed run: a busy machine inflates the median
    cpu_ms: float | None = None  # median CPU time of this process per generation (all its threads)
    runs: int = 0  # timed generations (at least ``repeats``, more for quick models)
    per_step_ms: float | None = None  # median over generations of the denoise loop time / steps
    first_run_ms: float | None = None  # the warm-up generation: sessions created, caches cold
    peak_rss_mb: float | None = None
    base_rss_mb: float | None = None  # the child's resident set before any session was opened
    psnr_db: float | None = None  # final image vs the fp32 reference; inf when identical
    reference: str | None = None
    notes: list[str] = field(default_factory=list)
    image: np.ndarray | None = field(default=None, repr=False)  # final raw output, kept for PSNR

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("image")
        if self.psnr_db is not None and math.isinf(self.psnr_db):
            d["psnr_db"] = "inf"  # strict JSON has no infinity
        return d


@dataclass
class BenchReport:
    bundle: str
    settings: dict[str, Any]
    machine: dict[str, Any]
    results: list[BenchResult]

    def to_json(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "settings": self.settings, "machine": self.machine,
                "results": [r.to_json() for r in self.results]}

    def best(self, min_psnr: float | None = None) -> BenchResult | None:
        """The fastest successful row end to end (with PSNR >= ``min_psnr`` when given)."""
        ok = [r for r in self.results if r.ok and r.end_to_end_ms is not None
              and (min_psnr is None or (r.psnr_db is not None and r.psnr_db >= min_psnr))]
        return min(ok, key=lambda r: r.end_to_end_ms) if ok else None


# -- machine -------------------------------------------------------------------------------------
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "dotprod", "i8mm")


def machine_info() -> dict[str, Any]:
    """CPU model, cores, the flags that decide int8/fp16 speed, and runtime versions."""
    from edge_sdk import __version__
    from edge_sdk.planning.board import usable_cpus
    from edge_sdk.planning.board_detect import machine_facts

    facts = machine_facts()
    flags = sorted(f for f in facts.cpu_flags if f in INT8_DOT_FLAGS or f.startswith("amx")
                   or f in ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "f16c", "fphp", "asimdhp"))
    from edge_sdk.runtimes.registry import get_runtime, runtime_names, runtime_rank

    versions: dict[str, str | None] = {"edge_sdk": __version__, "numpy": np.__version__}
    engines = sorted((n for n in runtime_names() if _module_of(n)), key=lambda n: (runtime_rank(n), n))
    for mod in (get_runtime(n).module for n in engines):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", None) or getattr(getattr(m, "runtime", None), "get_version",
                                                                       lambda: None)()
        except Exception:  # noqa: BLE001 - a version we cannot read is reported as missing
            versions[mod] = None
    return {"cpu_model": facts.cpu_model or platform.processor(), "arch": facts.arch, "logical_cpus": os.cpu_count(),
            "usable_cpus": usable_cpus(),
            "ram_mb": facts.ram_bytes // 2**20, "flags": flags,
            "int8_dot_product": any(f in facts.cpu_flags for f in INT8_DOT_FLAGS),
            "python": platform.python_version(), "versions": versions}


def _module_of(runtime: str) -> str | None:
    from edge_sdk.runtimes.registry import get_runtime

    try:
        return get_runtime(runtime).module
    except Exception:  # noqa: BLE001 - a runtime that cannot load has no version to report
        return None


# -- what to measure -------------------------------------------------------------------------------
def _split(values: str | Iterable[str] | None) -> list[str] | None:
    if values is None:
        return None
    items = [v.strip() for v in (values.split(",") if isinstance(values, str) else values) if v and v.strip()]
    return items or None


def candidate_configs(bundle: Bundle, *, runtimes: str | Iterable[str] | None = None,
                      precisions: str | Iterable[str] | None = None,
                      formats: str | Iterable[str] | None = None, device: str = "auto") -> list[BenchConfig]:
    """Every (runtime, format, precision) the bundle's denoiser-or-first component can run here."""
    usable = usable_runtimes()
    want_rt, want_fmt = _split(runtimes), _split(formats)
    want_prec = _split(precisions)
    if want_prec:
        from edge_sdk.converters.precision import ALIASES  # plain data module; no torch at import

        want_prec = [ALIASES.get(p.lower(), p.lower()) for p in want_prec]
    from edge_sdk.runtimes.registry import install_hint, runtimes_for_format

    for r in want_rt or ():
        if r not in usable:
            raise UsageError(f"runtime {r!r} is not usable here", hint=install_hint(r, "") or
                             f"usable: {', '.join(sorted(usable)) or 'none'}")
    main = "denoiser" if "denoiser" in bundle.components else ("generator" if "generator" in bundle.components
                                                                else bundle.components[0])
    seen: list[BenchConfig] = []
    arts = sorted((a for a in bundle.artifacts(main) if a.variant == ""),
                  key=lambda a: (a.format,
                                 PRECISION_ORDER.index(a.precision) if a.precision in PRECISION_ORDER else 99))
    for a in arts:
        if want_fmt and a.format not in want_fmt or want_prec and a.precision not in want_prec:
            continue
        for rt in runtimes_for_format(a.format):
            if rt in usable and (not want_rt or rt in want_rt):
                cfg = BenchConfig(rt, a.format, a.precision, device)
                if cfg not in seen:
                    seen.append(cfg)
    if not seen:
        have = ", ".join(sorted({f"{a.format}/{a.precision}" for a in bundle.artifacts(main)}))
        raise UsageError(f"nothing to measure: bundle {bundle.name} has {have}; asked for "
                         f"runtimes={want_rt or 'any'} precisions={want_prec or 'any'} formats={want_fmt or 'any'}",
                         hint=f"usable runtimes here: {', '.join(sorted(usable)) or 'none'}")
    return seen


def plan_for_config(bundle: Bundle, config: BenchConfig, *, threads: int | None = None) -> Plan:
    """A plan running every component as ``config`` says; a component without that artifact runs
    its fp32 artifact in the same format. The front door's own default plan, narrowed to one
    backend: bench measures backends side by side, not the plan a board would get."""
    return default_plan(bundle, runtime=config.runtime, format=config.format, precision=config.precision,
                        device=config.device, threads=threads, fallback_precision="fp32")


def plan_label(plan: Plan) -> str:
    """'onnxruntime:onnx/int8-static' when uniform, else one runtime:format/precision per component;
    '+bf16' when it computes in another precision than its weights', '+static' when compiled per shape."""
    from edge_sdk.pipelines.deep_cache import label as deep_cache_label

    def one(c) -> str:
        opts = c.options or {}
        extra = (f"+{opts['inference_precision']}" if opts.get("inference_precision") not in (None, "f32") else "")
        extra += "+static" if opts.get("static_shapes") == "per_shape" else ""
        extra += deep_cache_label(c)
        return f"{c.runtime}:{c.format}/{c.precision}{extra}"

    parts = {one(c) for c in plan.components.values()}
    if len(parts) == 1:
        return parts.pop()
    return ", ".join(f"{n}={one(c)}" for n, c in plan.components.items())


# -- one measurement (runs in the child process) -------------------------------------------------
def generate_kwargs(bundle: Bundle, *, steps: int, seed: int, width: int | None, height: int | None,
                    guidance: float | None = None) -> dict[str, Any]:
    """Arguments for a deterministic generation of this bundle's kind (labels/prompt as needed)."""
    kind = bundle.model.get("kind")
    if kind == "gan":
        return {"seed": seed}
    kw: dict[str, Any] = {"steps": steps, "seed": seed, "width": width, "height": height}
    if guidance is not None:
        kw["guidance"] = guidance
    if bundle.model.get("conditioning") == "text":
        if "text_encoder" in bundle.components:
            kw["prompt"] = "a photograph of a red bicycle"
        else:  # no text encoder in the bundle: fixed seeded embeddings shaped like its denoiser's input
            spec = bundle.signature("denoiser")[0][2]
            seq, dim = spec.shape[1], spec.shape[2]
            if not (isinstance(seq, int) and isinstance(dim, int)):
                raise UsageError(f"bundle {bundle.name} has no text encoder and its denoiser's {spec.name} has "
                                 f"no fixed shape {list(spec.shape)} to make benchmark embeddings from")
            rng = np.random.Generator(np.random.PCG64(seed))
            kw["prompt_embeds"] = rng.standard_normal((1, seq, dim), dtype=np.float32)
            kw["negative_prompt_embeds"] = np.zeros((1, seq, dim), dtype=np.float32)
    return kw


class _CallTimer:
    """Times every ``run`` of every runtime session the pipeline opens (wraps Sessions._load)."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)

    def attach(self, sessions: Any) -> None:
        load = sessions._load

        def timed_load(component: str):
            rt = load(component)
            if not getattr(rt, "_bench_timed", False):
                inner = rt.run

                def run(feeds, _inner=inner, _c=component):
                    t0 = time.perf_counter()
                    out = _inner(feeds)
                    self.times[_c].append(time.perf_counter() - t0)
                    return out

                rt.run = run  # an instance attribute shadows the method for this session only
                rt._bench_timed = True
            return rt

        sessions._load = timed_load


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def measure_plan(bundle_path: str, plan_json: dict[str, Any], *, steps: int, seed: int = 0,
                 width: int | None = None, height: int | None = None, guidance: float | None = None,
                 warmup: int = DEFAULT_WARMUP, repeats: int = DEFAULT_REPEATS,
                 min_seconds: float = DEFAULT_MIN_SECONDS, verify: bool = False) -> dict[str, Any]:
    """Load ``bundle_path`` with the plan, generate ``warmup`` + ``repeats`` times; plain-data result.

    Meant for a fresh process (``run_supervised``), so ``peak_rss_mb`` is this plan's alone.
    """
    from edge_sdk.api import load
    from edge_sdk.measure.memory import peak_rss_bytes, rss_bytes

    base = rss_bytes()
    bundle = Bundle.open(bundle_path, verify=verify)
    plan = Plan.from_json(plan_json)
    kw = generate_kwargs(bundle, steps=steps, seed=seed, width=width, height=height, guidance=guidance)
    timer = _CallTimer()
    with load(bundle, plan=plan) as gen:
        # A measurement reports the peak; the cap watch's sampling thread would disturb the timings.
        gen.watch = False
        if hasattr(gen.pipeline, "sessions"):
            timer.attach(gen.pipeline.sessions)
        t0 = time.perf_counter()
        for _ in range(max(1, warmup)):
            result = gen.generate(**kw)
        first = (time.perf_counter() - t0) / max(1, warmup)
        timer.times.clear()
        walls, cpus, per_step = [], [], []
        t_start = time.perf_counter()
        # At least ``repeats`` runs and ``min_seconds`` of them: quick models get enough samples for
        # a median that a busy machine's scheduling hiccups do not decide.
        while len(walls) < max(1, repeats) or (time.perf_counter() - t_start < min_seconds
                                                 and len(walls) < MAX_REPEATS):
            t0, c0 = time.perf_counter(), time.process_time()
            result = gen.generate(**kw)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            n = int(result.info.get("steps_run") or steps or 1)
            if "denoise" in result.timings:
                per_step.append(result.timings["denoise"] / max(1, n))
        notes = list(result.info.get("notes", []))
    n = len(walls)
    comps = {c: {"calls": len(ts) / n, "median_ms": _pct(ts, 50) * 1e3, "p90_ms": _pct(ts, 90) * 1e3,
                 "total_ms": sum(ts) / n * 1e3}
             for c, ts in timer.times.items() if ts}
    return {"components": comps, "end_to_end_ms": statistics.median(walls) * 1e3,
            "end_to_end_p90_ms": _pct(walls, 90) * 1e3, "end_to_end_min_ms": min(walls) * 1e3, "runs": n,
            "cpu_ms": statistics.median(cpus) * 1e3,
            "per_step_ms": statistics.median(per_step) * 1e3 if per_step else None,
            "first_run_ms": first * 1e3, "peak_rss_mb": peak_rss_bytes() / 2**20, "base_rss_mb": base / 2**20,
            "image": np.asarray(result.raw, dtype=np.float32), "notes": notes,
            "value_range": list(bundle.model.get("output_range", (-1.0, 1.0)))}


def run_measurement(bundle_path: str | os.PathLike, plan: Plan, *, isolate: bool = True,
                    timeout: float = CHILD_TIMEOUT_S, **kwargs: Any) -> dict[str, Any]:
    """``measure_plan`` in a fresh child process (``isolate``) or in this one."""
    if isolate:
        from edge_sdk.guard.supervise import run_supervised

        return run_supervised("edge_sdk.measure.bench:measure_plan", str(bundle_path), plan.to_json(), timeout=timeout,
                              **kwargs)
    return measure_plan(str(bundle_path), plan.to_json(), **kwargs)


# -- quality ---------------------------------------------------------------------------------------
def psnr(reference: np.ndarray, image: np.ndarray, value_range: Sequence[float] = (-1.0, 1.0)) -> float:
    """PSNR in dB of ``image`` against ``reference`` (both in ``value_range``, clipped to it first,
    as the saved image is); inf when they are identical."""
    lo, hi = float(value_range[0]), float(value_range[1])
    a = np.clip(np.asarray(reference, dtype=np.float64), lo, hi)
    b = np.clip(np.asarray(image, dtype=np.float64), lo, hi)
    if a.shape != b.shape:
        raise UsageError(f"cannot compare images of shapes {a.shape} and {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return float(10.0 * math.log10((hi - lo) ** 2 / mse))


def _fill(result: BenchResult, data: dict[str, Any]) -> None:
    for key in ("components", "end_to_end_ms", "end_to_end_p90_ms", "end_to_end_min_ms", "runs", "cpu_ms",
                "per_step_ms", "first_run_ms", "peak_rss_mb", "base_rss_mb", "notes", "image"):
        setattr(result, key, data[key])


def measure(bundle_path: str | os.PathLike, plan: Plan, *, label: str | None = None, steps: int, isolate: bool = True,
            **kwargs: Any) -> BenchResult:
    """One plan measured; an edge-sdk error (or a crashed child) becomes a failed row, not an exception."""
    res = BenchResult(label=label or plan_label(plan), steps=steps, plan=plan.to_json(), notes=list(plan.notes))
    try:
        data = run_measurement(bundle_path, plan, isolate=isolate, steps=steps, **kwargs)
    except EdgeSDKError as e:
        res.ok, res.error = False, e.message
        return res
    notes = res.notes + data.pop("notes")
    _fill(res, {**data, "notes": notes})
    res.value_range = data["value_range"]  # type: ignore[attr-defined]
    return res


def attach_quality(results: list[BenchResult], references: dict[int, BenchResult]) -> None:
    """PSNR of every row's final image against the reference row with the same step count."""
    for r in results:
        ref = references.get(r.steps)
        if not r.ok or ref is None or not ref.ok or r.image is None or ref.image is None:
            continue
        r.psnr_db = psnr(ref.image, r.image, getattr(ref, "value_range", (-1.0, 1.0)))
        r.reference = ref.label


def reference_config(bundle: Bundle, configs: Sequence[BenchConfig]) -> BenchConfig:
    """The fp32 row to compare against: a measured fp32 config (the most preferred runtime and format
    first, e.g. onnxruntime on ONNX), else the plain fp32 plan."""
    from edge_sdk.formats.registry import format_names
    from edge_sdk.runtimes.registry import runtime_rank

    fp32 = [c for c in configs if c.precision == "fp32"]
    if fp32:
        fmts = format_names()
        return sorted(fp32, key=lambda c: (runtime_rank(c.runtime), fmts.index(c.format) if c.format in fmts
                                           else len(fmts)))[0]
    p = default_plan(bundle, precision="fp32")
    first = next(iter(p.components.values()))
    return BenchConfig(first.runtime, first.format, "fp32", configs[0].device if configs else "auto")


# -- the whole benchmark ----------------------------------------------------------------------------
def bench(bundle: str | os.PathLike | Bundle, *, runtimes: str | Iterable[str] | None = None,
          precisions: str | Iterable[str] | None = None, formats: str | Iterable[str] | None = None,
          steps: int | Sequence[int] | None = None, size: tuple[int, int] | None = None, seed: int = 0,
          guidance: float | None = None, threads: int | None = None, device: str = "auto",
          warmup: int = DEFAULT_WARMUP, repeats: int = DEFAULT_REPEATS, min_seconds: float = DEFAULT_MIN_SECONDS,
          isolate: bool = True, progress: ProgressFn | None = None) -> BenchReport:
    """Measure ``bundle`` over runtimes x precisions x step counts (see the module docstring).

    ``size`` is (width, height) in pixels (default: the model's native size). The fp32 reference
    is measured too when no fp32 configuration was asked for, and marked as such.
    """
    b = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)  # verify once, here
    if repeats < 1 or warmup < 0:
        raise UsageError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    step_list = [int(s) for s in (steps if isinstance(steps, Sequence) else [steps])] if steps else \
        [int(b.sampler.get("default_steps", 20))]
    if any(s < 1 for s in step_list):
        raise UsageError(f"steps must be positive, got {step_list}")
    width, height = size if size else (None, None)
    configs = candidate_configs(b, runtimes=runtimes, precisions=precisions, formats=formats, device=device)
    ref_cfg = reference_config(b, configs)
    extra_ref = ref_cfg not in configs
    kw = dict(seed=seed, width=width, height=height, guidance=guidance, warmup=warmup, repeats=repeats,
              min_seconds=min_seconds)
    jobs = [(c, s) for s in step_list for c in ([ref_cfg] if extra_ref else []) + configs]
    results: list[BenchResult] = []
    kw = dict(seed=seed, width=width, height=height, guidance=guidance, warmup=warmup, repeats=repeats)
    for i, (cfg, s) in enumerate(jobs):
        if progress:
            progress(i, len(jobs), f"{cfg.label} x{s}")
        try:
            plan = plan_for_config(b, cfg, threads=threads)
        except EdgeSDKError as e:  # e.g. the decoder has no artifact in this format: a failed row, not an abort
            results.append(BenchResult(label=cfg.label, steps=s, plan={}, ok=False, error=e.message))
            continue
        r = measure(b.root, plan, label=cfg.label, steps=s, isolate=isolate, **kw)
        if extra_ref and cfg == ref_cfg:
            r.notes.append("fp32 reference (measured for PSNR)")
        results.append(r)
    if progress:
        progress(len(jobs), len(jobs), "done")
    refs = {r.steps: r for r in results if r.label == ref_cfg.label and r.ok}
    attach_quality(results, refs)
    settings = {"steps": step_list, "size": list(size) if size else None, "seed": seed, "guidance": guidance,
                "threads": threads, "device": device, "warmup": warmup, "repeats": repeats,
                "min_seconds": min_seconds, "isolated": isolate,
                "reference": ref_cfg.label}
    return BenchReport(bundle=str(b.root), settings=settings, machine=machine_info(), results=results)


# -- presentation ------------------------------------------------------------------------------------
def fmt_psnr(v: float | None) -> str:
    if v is None:
        return "-"
    return "identical" if math.isinf(v) else f"{v:.1f}"


def report_rows(report: BenchReport) -> tuple[list[tuple[Any, ...]], tuple[str, ...]]:
    """Rows for a terminal table: one per configuration x steps."""
    comps = sorted({c for r in report.results for c in r.components})
    headers = ("config", "steps", "e2e ms", "p90 ms", "step ms",
               *[f"{c} med/p90 ms" for c in comps], "peak MB", "PSNR dB")
    rows = []
    for r in report.results:
        if not r.ok:
            rows.append((r.label, r.steps, "failed: " + (r.error or "")[:60], *[""] * (len(headers) - 3)))
            continue
        rows.append((r.label, r.steps, f"{r.end_to_end_ms:.1f}", f"{r.end_to_end_p90_ms:.1f}",
                     "-" if r.per_step_ms is None else f"{r.per_step_ms:.2f}",
                     *[(f"{r.components[c]['median_ms']:.2f}/{r.components[c]['p90_ms']:.2f}"
                        if c in r.components else "-") for c in comps],
                     f"{r.peak_rss_mb:.0f}", fmt_psnr(r.psnr_db)))
    return rows, headers


def write_chart(report: BenchReport, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """PNG scatter: end-to-end latency (x) against PSNR vs fp32 (y); one marker per backend and
    precision, identical-to-reference rows drawn at the top edge."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("the chart needs matplotlib", hint="pip install 'edge-sdk[bench]'") from None
    from edge_sdk.guard.fsutil import atomic_write
    from edge_sdk.runtimes.registry import runtime_names, runtime_rank

    rows = [r for r in report.results if r.ok and r.end_to_end_ms is not None]
    finite = [r.psnr_db for r in rows if r.psnr_db is not None and not math.isinf(r.psnr_db)]
    top = (max(finite) if finite else 40.0) + 8.0
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    # One marker per registered runtime, in preference order (onnxruntime o, openvino s, litert ^).
    markers = dict(zip(sorted(runtime_names(), key=lambda n: (runtime_rank(n), n)), "os^v<>ph*", strict=False))
    colors = dict(zip(PRECISION_ORDER, ("tab:blue", "tab:orange", "tab:green", "tab:red"), strict=False))
    for r in rows:
        rt, _, rest = r.label.partition(":")
        prec = rest.rpartition("/")[2] if "," not in r.label else "mixed"
        y = top if r.psnr_db is None or math.isinf(r.psnr_db) else r.psnr_db
        ax.scatter(r.end_to_end_ms, y, marker=markers.get(rt, "D"), color=colors.get(prec, "tab:gray"), s=60,
                   edgecolors="black", linewidths=0.5)
        many_steps = len({x.steps for x in rows}) > 1
        ax.annotate(r.label + (f" x{r.steps}" if many_steps else ""), (r.end_to_end_ms, y), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    ax.axhline(top, color="lightgray", lw=0.8, ls=":")
    ax.annotate("identical to the fp32 reference", (0.5, top), xycoords=("axes fraction", "data"), fontsize=7,
                ha="center", va="top", color="gray", xytext=(0, -4), textcoords="offset points")
    xs = [r.end_to_end_ms for r in rows]
    if xs and max(xs) / max(min(xs), 1e-9) > 10:  # log only when the spread needs it
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
    ax.set_xlabel("end-to-end latency, median (ms)" + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel(f"final image PSNR vs {report.settings.get('reference', 'fp32')} (dB)")
    ax.set_title(title or f"{Path(report.bundle).name}: latency vs quality", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    with atomic_write(out) as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return out
