"""Peak-memory cost of each component, per unit of work, for the planner.

A component's cost on a runtime is four numbers:

- ``base``: the process before any model is open (Python, numpy, the runtime's library);
- ``session``: what opening the artifact adds (weights as the runtime holds them, plus its own
  bookkeeping; ~1.0-1.3x the file size);
- activations while it runs, ``c0 + max(c1 * units, c2 * cells**2)`` per batch item, where
  ``units`` are output pixels for a decoder and latent cells for everything else, and ``cells``
  the latent cells of the input. The quadratic term is self-attention (a [cells x cells] score
  matrix per head). It is a max, not a sum, because the runtime's memory planner reuses buffers:
  the attention phase (a VAE's mid block, at latent resolution) and the full-resolution conv
  phase (its last up block) are not alive at the same time, and the peak is the larger of them.

Where the numbers come from, best first:

1. ``measured``: the component's manifest config holds a ``memory_profile`` recorded at convert
   time, or a probe measured it on this machine (cached by the artifact's sha256): the artifact
   is opened in a child process and run at growing sizes, and the kernel's peak-RSS mark (VmHWM)
   is read after each run; the three coefficients are a least-squares fit. Activation memory is
   a property of the graph and the runtime's allocator, so a probe on the workstation predicts a
   board running the same runtime (within the allocator's rounding).
2. ``default``: when the artifact cannot be opened here (a TFLite-only bundle without LiteRT),
   per-role factors calibrated on Stable Diffusion's VAE decoder (3.9 KB per output pixel, fp32,
   from OnnxStream's 1.004 GB at 512x512: docs/boards.md [src44]) and UNet, scaled by
   sqrt(parameters / SD's parameters) since activations grow with layer width and parameters with
   its square. A rough guide only; the plan says so.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.errors import EdgeSDKError, PlanError, SupervisedProcessError

MB = 1024 * 1024
CACHE_ENV = "EDGE_SDK_CACHE_DIR"
PROFILE_VERSION = 6
# The process before any session and the session options the probe measures with are each
# runtime's own facts (``Runtime.base_memory``, ``Runtime.plan_options``).
# A memory probe runs the model: a graph that never terminates must not hang `plan` (hardening class 7).
PROBE_TIMEOUT = 300.0
PROBE_TIMEOUT_ENV = "EDGE_SDK_PROBE_TIMEOUT"
SESSION_FACTOR = 1.2  # runtime-held bytes per artifact byte, when not measured
SESSION_FIXED = 20 * MB
# Role defaults, calibrated on SD 1.5 (fp32): VAE decoder 3.9 KB per output pixel with 49.5M
# parameters; UNet ~56 KB per latent cell (0.23 GB at 64x64 cells with SDPA) with 859.5M.
_ROLE_DEFAULT = {"decoder": (3900.0, 49.5e6, 1.0), "denoiser": (56_000.0, 859.5e6, 2.0),
                 "encoder": (2000.0, 34.2e6, 1.0), "generator": (2000.0, 10e6, 0.0),
                 "text_encoder": (0.0, 123e6, 0.0)}
_PROBE_SIZES = (16, 32, 48, 64, 96, 128)  # latent cells per side, tried in order
_PROBE_BUDGET = 192 * MB  # stop growing the probe once a run needs this much


@dataclass
class ComponentCost:
    role: str
    runtime: str
    base: int
    session: int
    c0: float
    c1: float  # bytes per unit (output pixel for decoders, latent cell otherwise)
    c2: float  # bytes per cell**2 (attention)
    unit: str  # "out_pixel" or "cell"
    source: str  # "measured", "manifest" or "default"
    samples: list[list[float]] = field(default_factory=list)  # [cells_side, first call, later calls]
    # The same fit for a session that has already run once at that shape (its steady state):
    # ONNX Runtime's arena keeps the first call's buffers and adds the planned memory pattern,
    # between 1x and 2x of the first call depending on how the sizes round. None: 2x is assumed.
    repeated: list[float] | None = None

    def activation(self, cells: int, *, down: int = 1, batch: int = 1, repeated: bool = False) -> int:
        """Activation bytes of a call on ``batch`` items of ``cells`` latent cells each.

        ``repeated``: what a resident session holds once it has been called more than once.
        """
        units = cells * down * down if self.unit == "out_pixel" else cells
        c0, c1, c2 = (self.repeated if repeated and self.repeated else (self.c0, self.c1, self.c2))
        act = batch * (c0 + max(c1 * units, c2 * cells * cells))
        if repeated and not self.repeated:
            act *= 2.0
        return int(act)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "edge-sdk") / "memory"


def _entry_sha(bundle: Bundle, component: str, art) -> str:
    for a in bundle.component(component)["artifacts"]:
        if (a["format"], a["precision"], a.get("variant", "")) == (art.format, art.precision, art.variant):
            return next(f["sha256"] for f in a["files"] if f["path"] == a["entry"])
    raise PlanError(f"artifact of {component} is not in the manifest")


def _base_memory(runtime: str) -> int:
    from edge_sdk.runtimes.base import Runtime
    from edge_sdk.runtimes.registry import get_runtime

    try:
        return get_runtime(runtime).base_memory
    except Exception:  # noqa: BLE001 - an engine we cannot load: the generic adapter's figure
        return Runtime.base_memory


def default_cost(bundle: Bundle, component: str, runtime: str, art) -> ComponentCost:
    per_unit, ref_params, heads = _ROLE_DEFAULT.get(component, (2000.0, 50e6, 0.0))
    config = bundle.component(component).get("config") or {}
    # An alternative network (the "tiny" decoder) has its own parameter count in the config.
    alt = (config.get("variants") or {}).get(getattr(art, "variant", "")) or {}
    params = alt.get("parameters") or bundle.component(component).get("parameters") or ref_params
    scale = math.sqrt(max(params, 1) / ref_params)
    return ComponentCost(role=component, runtime=runtime, base=_base_memory(runtime),
                         session=int(art.size * SESSION_FACTOR + SESSION_FIXED), c0=0.0, c1=per_unit * scale,
                         c2=4.0 * heads if alt.get("attention", True) else 0.0,
                         unit="out_pixel" if component == "decoder" else "cell", source="default")


def component_cost(bundle: Bundle, component: str, runtime: str, art, *, device: str = "cpu",
                   threads: int | None = None, measure: bool = True) -> ComponentCost:
    """The cost model of one artifact on one runtime: recorded, cached, probed, or the role default."""
    recorded = (bundle.component(component).get("config") or {}).get("memory_profile")
    if isinstance(recorded, dict) and recorded.get("runtime") == runtime and art.variant in ("", "static"):
        try:
            return ComponentCost(**{**recorded, "source": "manifest"})
        except TypeError:
            pass  # an older or foreign layout: measure instead
    if not measure:
        return default_cost(bundle, component, runtime, art)
    # Threads matter: each runtime worker thread gets its own malloc arena and stack pages.
    threads = int(threads or os.cpu_count() or 1)
    key = f"{_entry_sha(bundle, component, art)}-{runtime}-{device}-t{threads}-v{PROFILE_VERSION}.json"
    cached = _cache_dir() / key
    if cached.is_file():
        try:
            return ComponentCost(**json.loads(cached.read_text()))
        except (ValueError, TypeError):
            pass
    try:
        cost = probe(bundle, component, runtime, art, device=device, threads=threads)
    except PlanError:
        return default_cost(bundle, component, runtime, art)
    try:
        from edge_sdk.fsutil import atomic_write

        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(cached, "w") as f:
            json.dump(cost.to_json(), f)
    except Exception:  # noqa: BLE001 - a read-only home only costs a re-probe next time
        pass
    return cost


def _probe_feeds(inputs: list[dict[str, Any]], n: int, model: dict[str, Any]) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in inputs:
        shape = []
        for axis, d in enumerate(spec["shape"]):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif axis == 0:
                shape.append(1)
            elif len(spec["shape"]) == 4 and axis >= 2:
                shape.append(n)
            else:
                shape.append(int(model.get("max_text_length", 77)))
        dt = np.dtype(spec["dtype"])
        rng = np.random.default_rng(0)
        feeds[spec["name"]] = (rng.standard_normal(shape).astype(dt) if dt.kind == "f"
                               else np.zeros(shape, dtype=dt))
        if spec["name"] in ("timestep", "timesteps", "t"):
            feeds[spec["name"]] = np.full(shape, 500, dtype=dt)
    return feeds


def _one_size(cls, args: dict[str, Any], n: int | None) -> tuple[int, list[int], list[dict[str, Any]]]:
    """Open the artifact, run it twice at ``n`` cells per side: (session bytes, [first, second] peaks, inputs)."""
    from edge_sdk.memory import peak_rss_bytes, reset_peak_rss, rss_bytes

    before_open = rss_bytes()
    rt = cls(args["path"], device=args["device"], threads=args.get("threads"), options=args.get("options"))
    before = rss_bytes()
    inputs = [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in rt.inputs]
    acts = []
    if n is not None:
        if not reset_peak_rss():
            before = peak_rss_bytes()  # cannot reset the mark: only growth past it is seen
        feeds = _probe_feeds(inputs, n, args["model"])
        for _ in range(2):  # the first call, then the steady state of a session that ran before
            rt.run(feeds)
            acts.append(max(0, peak_rss_bytes() - before))
    return before - before_open, acts, inputs


def _die_with_parent() -> None:
    """In a forked probe process: SIGKILL when the probe child dies (its watchdog killed it for a
    hang), so no orphan keeps running the model. Linux only (prctl); elsewhere a no-op."""
    import ctypes
    import signal

    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _probe_child(args: dict[str, Any]) -> dict[str, Any]:
    """Runs in the child: per size, a forked process opens the artifact fresh and runs it once.

    A fresh process per size is what a real run looks like; one session run at growing sizes
    lets the allocator's arena fragment and overstates the larger sizes by ~1.3x.
    """
    from edge_sdk.memory import rss_bytes
    from edge_sdk.runtimes.registry import get_runtime

    cls = get_runtime(args["runtime"])  # imports the engine before forking
    cls.probe()
    # Run-time imports a real run has too (pipelines, opencv), so the base is comparable.
    import edge_sdk.pipelines  # noqa: F401

    base = rss_bytes()
    # The first session carries the runtime's one-time set-up; a second one opened beside it is
    # what each session costs. The set-up goes to the base.
    one = cls(args["path"], device=args["device"], threads=args.get("threads"), options=args.get("options"))
    first = rss_bytes() - base
    two = cls(args["path"], device=args["device"], threads=args.get("threads"), options=args.get("options"))
    session = rss_bytes() - base - first
    base += max(0, first - session)
    inputs = [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in one.inputs]
    one.close()
    two.close()
    del one, two
    spatial = any(len(t["shape"]) == 4 and not all(isinstance(d, int) and d > 0 for d in t["shape"][2:])
                  for t in inputs)
    fixed = [t["shape"][2] for t in inputs if len(t["shape"]) == 4 and isinstance(t["shape"][2], int)]
    samples = []
    for n in (args["sizes"] if spatial else [fixed[0] if fixed else 0]):
        r, w = os.pipe()
        pid = os.fork() if hasattr(os, "fork") else -1
        if pid == 0:  # the forked child: measure, report, leave without cleanup
            try:
                _die_with_parent()
                os.close(r)
                _, acts, _ = _one_size(cls, args, n)
                os.write(w, json.dumps(acts).encode())
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r) as f:
            text = f.read()
        if pid > 0:
            os.waitpid(pid, 0)
        if not text:
            break  # the size failed (too big, or the model refuses it): fit what we have
        acts = json.loads(text)
        samples.append([n, *acts])
        if acts[0] > args["budget"] and len(samples) >= 3:
            break
    return {"base": base, "session": session, "samples": samples}


def probe_timeout() -> float:
    """Seconds a memory probe may take: ``EDGE_SDK_PROBE_TIMEOUT``, else PROBE_TIMEOUT."""
    from edge_sdk.bounds import seconds_from_env

    return seconds_from_env(PROBE_TIMEOUT_ENV, PROBE_TIMEOUT, bounds=(0.1, 86_400.0))


def probe(bundle: Bundle, component: str, runtime: str, art, *, device: str = "cpu", threads: int = 1,
          sizes: tuple[int, ...] = _PROBE_SIZES, budget: int = _PROBE_BUDGET,
          timeout: float | None = None) -> ComponentCost:
    """Measure a component's cost on ``runtime`` here, in a supervised child process (clean peak-RSS
    marks; a model that crashes or never terminates becomes SupervisedProcessError, hardening class 7).

    A child that reports an ordinary failure (no fork here, a runtime error) is a PlanError, which
    ``component_cost`` answers with the role default; a crash or a timeout is not: the same model
    would crash or hang the run it is planned for, so it is reported.
    """
    from edge_sdk.runtimes.registry import plan_options
    from edge_sdk.supervise import run_supervised

    timeout = probe_timeout() if timeout is None else timeout
    args = {"runtime": runtime, "path": str(art.path), "device": device, "threads": threads, "sizes": list(sizes),
            "budget": budget, "model": bundle.model, "options": plan_options(runtime)}
    try:
        got = run_supervised(_probe_child, args, timeout=timeout)
    except SupervisedProcessError as e:
        raise SupervisedProcessError(
            f"the memory probe of {component} ({art.path.name}) on {runtime} failed: {e.message}",
            hint=(f"the model may never terminate, or this machine is slow: raise {PROBE_TIMEOUT_ENV} "
                  f"(now {timeout:g} s), or plan with --no-measure"
                  if "no answer" in e.message else e.hint)) from None
    except EdgeSDKError as e:
        raise PlanError(f"cannot measure {component} on {runtime} here: {e.message}") from None
    if not got["samples"]:
        raise PlanError(f"measuring {component} on {runtime} gave no sample (no fork here, or every size failed)")
    down = int(bundle.model.get("vae_downsample", 1)) if component == "decoder" else 1
    floor = 0.0
    if component == "decoder" and has_attention(Path(art.path)) is not False:
        # AutoencoderKL-family decoders: one fp32 (fp16: half) score matrix at latent resolution.
        floor = 2.0 if art.precision == "fp16" else 4.0
    first = [[x[0], x[1]] for x in got["samples"]]
    later = [[x[0], max(x[1], x[-1])] for x in got["samples"]]
    c0, c1, c2 = fit_activation(first, down=down, c2_floor=floor)
    rep = fit_activation(later, down=down, c2_floor=floor)
    return ComponentCost(role=component, runtime=runtime, base=int(got["base"]), session=int(got["session"]),
                         c0=c0, c1=c1, c2=c2, unit="out_pixel" if component == "decoder" else "cell",
                         source="measured", samples=got["samples"], repeated=list(rep))


def fit_activation(samples: list[list[float]], *, down: int = 1, c2_floor: float = 0.0) -> tuple[float, float, float]:
    """Fit act = c0 + max(c1*units, c2*cells^2) to probe samples (relative error, grid search).

    ``c2_floor`` is a lower bound for the attention term: a probe that stays at small sizes only
    sees the conv phase, so a decoder with attention gets at least one fp32 score matrix.
    """
    big = [s for s in samples if s[1] >= 4 * MB]  # below a few MB the allocator's slack is all one sees
    samples = big if len(big) >= 2 else samples
    if not samples:
        return 0.0, 0.0, c2_floor
    n = np.array([s[0] for s in samples], dtype=np.float64)
    y = np.array([s[1] for s in samples], dtype=np.float64)
    units, quad = n * n * down * down, (n * n) ** 2
    c1s = np.concatenate([[0.0], np.geomspace(1.0, 1e6, 241)])
    c2s = np.concatenate([[0.0], np.geomspace(0.01, 1e3, 201)])
    c2s = c2s[c2s >= c2_floor] if c2_floor > 0 else c2s
    if c2_floor > 0:
        c2s = np.concatenate([[c2_floor], c2s])
    phase = np.maximum(c1s[:, None, None] * units[None, None, :], c2s[None, :, None] * quad[None, None, :])
    # c0 for each (c1, c2): the mean remainder, never negative.
    c0 = np.clip((y[None, None, :] - phase).mean(axis=2), 0.0, None)
    err = (((c0[:, :, None] + phase) - y[None, None, :]) / y[None, None, :]) ** 2
    # Underestimates are worse than overestimates for a cap: weigh them 4x.
    under = (c0[:, :, None] + phase) < y[None, None, :]
    score = (err * np.where(under, 4.0, 1.0)).sum(axis=2)
    i, j = np.unravel_index(int(np.argmin(score)), score.shape)
    return float(c0[i, j]), float(c1s[i]), float(c2s[j])


def has_attention(path: Path) -> bool | None:
    """Whether a model file holds a softmax (attention), from its bytes; None when the format hides it."""
    suffix = path.suffix.lower()
    if suffix not in (".onnx", ".xml"):
        return None  # TFLite stores operator codes, not names
    needle = (b"Softmax", b"SoftMax")
    size = path.stat().st_size
    with open(path, "rb") as f:  # op types sit in the graph, before large initializers in most files
        head = f.read(min(size, 64 * MB))
    return any(x in head for x in needle)
