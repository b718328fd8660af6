"""Measured memory costs: a component's artifact run at growing sizes in a supervised child
process, fitted to ``memory_estimate.ComponentCost`` and cached by the artifact's sha256.

Kept apart from the cost model (``memory_estimate``), which the run-time governor reads: the probe
imports the pipelines (so its base is a real run's), and they import the governor.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.errors import EdgeSDKError, PlanError, SupervisedProcessError
from edge_sdk.planning.memory_estimate import MB, ComponentCost, default_cost, fit_activation, has_attention

PROFILE_VERSION = 9
# A memory probe runs the model: a graph that never terminates must not hang `plan` (hardening class 7).
PROBE_TIMEOUT = 300.0
PROBE_TIMEOUT_ENV = "EDGE_SDK_PROBE_TIMEOUT"
_PROBE_SIZES = (16, 32, 48, 64, 96, 128)  # latent cells per side, tried in order
_PROBE_BUDGET = 192 * MB  # stop growing the probe once a run needs this much
# A run at the planned size is measured too when its predicted footprint is within this share of
# the machine's available memory: the fit from 16-48 cells put SD 1.5's fp32 UNet at 1019 MB of
# activations at 64x64 cells, where a run measured 1121 MB (benchmarks/RESULTS.md, issue 16).
_TARGET_SHARE = 0.7


def _cache_dir() -> Path:
    from edge_sdk.cache import cache_dir

    return cache_dir("memory")


def _entry_sha(bundle: Bundle, component: str, art) -> str:
    for a in bundle.component(component)["artifacts"]:
        if (a["format"], a["precision"], a.get("variant", "")) == (art.format, art.precision, art.variant):
            return next(f["sha256"] for f in a["files"] if f["path"] == a["entry"])
    raise PlanError(f"artifact of {component} is not in the manifest")


def component_cost(bundle: Bundle, component: str, runtime: str, art, *, device: str = "cpu",
                   threads: int | None = None, measure: bool = True,
                   target: tuple[int, int] | None = None, options: dict[str, Any] | None = None) -> ComponentCost:
    """The cost model of one artifact on one runtime: recorded, cached, probed, or the role default.

    ``options``: the session options the plan runs it with, where they are not the runtime's
    ``plan_options`` (a streamed plan's, without the CPU arena): measured with those, cached apart.

    ``target``: the latent cells (height, width) the plan will run; a measured model that has no
    sample that large gets one (``probe_at``), where this machine has the memory for it, so the
    plan's figure at that size is a measurement rather than an extrapolation.
    """
    from edge_sdk.runtimes.registry import memory_facts

    cost = _component_cost(bundle, component, runtime, art, device=device, threads=threads, measure=measure,
                           target=target, options=options)
    # How the runtime holds activations is the runtime's fact, not the recording's (older ones lack it).
    facts = memory_facts(runtime)
    return replace(cost, fixed_once=facts["batch_holds_fixed_once"], scratch_released=facts["releases_scratch"])


def _component_cost(bundle: Bundle, component: str, runtime: str, art, *, device: str, threads: int | None,
                    measure: bool, target: tuple[int, int] | None, options: dict[str, Any] | None) -> ComponentCost:
    from edge_sdk.runtimes.registry import plan_options

    options = plan_options(runtime) if options is None else dict(options)
    own = options != plan_options(runtime)
    recorded = (bundle.component(component).get("config") or {}).get("memory_profile")
    if not own and isinstance(recorded, dict) and recorded.get("runtime") == runtime and art.variant in ("", "static"):
        try:
            return ComponentCost(**{**recorded, "source": "manifest"})
        except TypeError:
            pass  # an older or foreign layout: measure instead
    if not measure:
        return default_cost(bundle, component, runtime, art)
    # Threads matter: each runtime worker thread gets its own malloc arena and stack pages.
    threads = int(threads or os.cpu_count() or 1)
    key = f"{_entry_sha(bundle, component, art)}-{runtime}-{device}-t{threads}{_options_tag(options) if own else ''}"
    key += f"-v{PROFILE_VERSION}.json"
    cached = _cache_dir() / key
    cost = None
    if cached.is_file():
        try:
            cost = ComponentCost(**json.loads(cached.read_text()))
        except (ValueError, TypeError):
            pass
    known = cost
    if cost is None:
        try:
            cost = probe(bundle, component, runtime, art, device=device, threads=threads, options=options)
        except PlanError:
            return default_cost(bundle, component, runtime, art)
    if target is not None and cost.sample_at(target[0] * target[1]) is None:
        cost = probe_at(bundle, component, runtime, art, cost, target, device=device, threads=threads,
                        options=options)
    if cost is known:  # nothing new to cache (or the target run was declined: asked again next plan)
        return cost
    try:
        from edge_sdk.guard.fsutil import atomic_write

        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(cached, "w") as f:
            json.dump(cost.to_json(), f)
    except Exception:  # noqa: BLE001 - a read-only home only costs a re-probe next time
        pass
    return cost


def _options_tag(options: dict[str, Any]) -> str:
    return "-o" + hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _probe_feeds(inputs: list[dict[str, Any]], n: int | list[int], model: dict[str, Any],
                 batch: int = 1) -> dict[str, np.ndarray]:
    """Inputs of ``batch`` rows at ``n`` cells per side, or [height, width] cells."""
    hw = list(n) if isinstance(n, (list, tuple)) else [n, n]
    feeds = {}
    for spec in inputs:
        shape = []
        for axis, d in enumerate(spec["shape"]):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif axis == 0:
                shape.append(batch)
            elif len(spec["shape"]) == 4 and axis >= 2:
                shape.append(hw[axis - 2])
            else:
                shape.append(int(model.get("max_text_length", 77)))
        dt = np.dtype(spec["dtype"])
        rng = np.random.default_rng(0)
        feeds[spec["name"]] = (rng.standard_normal(shape).astype(dt) if dt.kind == "f"
                               else np.zeros(shape, dtype=dt))
        if spec["name"] in ("timestep", "timesteps", "t"):
            feeds[spec["name"]] = np.full(shape, 500, dtype=dt)
    return feeds


def _one_size(cls, args: dict[str, Any], n: int | list[int] | None) -> tuple[int, list[int], list[dict[str, Any]]]:
    """Open the artifact, run it twice at ``n`` cells per side (or [h, w]): (session bytes, [first, second]
    peaks, inputs)."""
    from edge_sdk.measure.memory import peak_rss_bytes, reset_peak_rss, rss_bytes

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
    from edge_sdk.measure.memory import peak_rss_bytes, reset_peak_rss, rss_bytes
    from edge_sdk.runtimes.registry import get_runtime

    cls = get_runtime(args["runtime"])  # imports the engine before forking
    cls.probe()
    # Run-time imports a real run has too (pipelines, opencv), so the base is comparable.
    import edge_sdk.pipelines  # noqa: F401

    if not args.get("sessions", True):  # one more size for a model measured before: runs only
        return {"base": rss_bytes(), "session": 0, "samples": _run_sizes(cls, args, args["sizes"])}
    # The engine's one-time set-up goes to the base: done on a model of its own where the engine
    # can (``warm_up``); else the first session carries it, a second one opened beside it is what
    # each session costs, and the difference is the set-up.
    kw = {"device": args["device"], "threads": args.get("threads"), "options": args.get("options")}
    warm = cls.warm_up(args["device"], args.get("threads"), args.get("options") or {})
    base = rss_bytes()
    marked = reset_peak_rss()
    one = cls(args["path"], **kw)
    session = first = rss_bytes() - base
    # The open's peak above the session it leaves (unknown where the mark cannot be reset).
    open_extra = max(0, peak_rss_bytes() - base - first) if marked else 0
    if warm is None:
        two = cls(args["path"], **kw)
        session = rss_bytes() - base - first
        base += max(0, first - session)
        two.close()
        del two
    inputs = [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in one.inputs]
    one.close()
    del one, warm
    spatial = any(len(t["shape"]) == 4 and not all(isinstance(d, int) and d > 0 for d in t["shape"][2:])
                  for t in inputs)
    fixed = [t["shape"][2] for t in inputs if len(t["shape"]) == 4 and isinstance(t["shape"][2], int)]
    samples = _run_sizes(cls, args, args["sizes"] if spatial else [fixed[0] if fixed else 0])
    return {"base": base, "session": session, "open_extra": open_extra, "samples": samples}


def _run_sizes(cls, args: dict[str, Any], sizes: list) -> list[list[float]]:
    """Per size (cells per side, or [h, w]), a forked process opens the artifact fresh and runs it:
    samples [side, first call, later call], side = sqrt(h * w) for a non-square size."""
    samples: list[list[float]] = []
    for n in sizes:
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
            if not samples:
                # Refused before any size ran: a graph with attention in N query chunks needs at
                # least N tokens at its coarsest attention level (sliced:32 at 16 cells has 4).
                continue
            break  # the size failed (too big, or the model refuses it): fit what we have
        acts = json.loads(text)
        side = float(np.sqrt(n[0] * n[1])) if isinstance(n, list) else n
        samples.append([side, *acts])
        if acts[0] > args["budget"] and len(samples) >= 3:
            break
    return samples


def probe_timeout() -> float:
    """Seconds a memory probe may take: ``EDGE_SDK_PROBE_TIMEOUT``, else PROBE_TIMEOUT."""
    from edge_sdk.guard.bounds import seconds_from_env

    return seconds_from_env(PROBE_TIMEOUT_ENV, PROBE_TIMEOUT, bounds=(0.1, 86_400.0))


def probe(bundle: Bundle, component: str, runtime: str, art, *, device: str = "cpu", threads: int = 1,
          sizes: tuple[int, ...] = _PROBE_SIZES, budget: int = _PROBE_BUDGET,
          timeout: float | None = None, options: dict[str, Any] | None = None) -> ComponentCost:
    """Measure a component's cost on ``runtime`` here, in a supervised child process (clean peak-RSS
    marks; a model that crashes or never terminates becomes SupervisedProcessError, hardening class 7).

    A child that reports an ordinary failure (no fork here, a runtime error) is a PlanError, which
    ``component_cost`` answers with the role default; a crash or a timeout is not: the same model
    would crash or hang the run it is planned for, so it is reported.
    """
    from edge_sdk.guard.supervise import run_supervised
    from edge_sdk.runtimes.registry import plan_options

    timeout = probe_timeout() if timeout is None else timeout
    args = {"runtime": runtime, "path": str(art.path), "device": device, "threads": threads, "sizes": list(sizes),
            "budget": budget, "model": bundle.model,
            "options": plan_options(runtime) if options is None else options}
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
    return _fitted(bundle, component, runtime, art, int(got["base"]), int(got["session"]), got["samples"],
                   int(got.get("open_extra", 0)))


def _fitted(bundle: Bundle, component: str, runtime: str, art, base: int, session: int,
            samples: list[list[float]], open_extra: int = 0) -> ComponentCost:
    from edge_sdk.runtimes.registry import memory_facts

    down = int(bundle.model.get("vae_downsample", 1)) if component == "decoder" else 1
    floor = 0.0
    scores_whole = memory_facts(runtime)["materialises_attention"]
    if component == "decoder" and scores_whole and has_attention(Path(art.path)) is not False:
        # AutoencoderKL-family decoders: one fp32 (fp16: half) score matrix at latent resolution.
        floor = 2.0 if art.precision == "fp16" else 4.0
    first = [[x[0], x[1]] for x in samples]
    later = [[x[0], max(x[1], x[-1])] for x in samples]
    c0, c1, c2 = fit_activation(first, down=down, c2_floor=floor, quadratic=scores_whole)
    rep = fit_activation(later, down=down, c2_floor=floor, quadratic=scores_whole)
    return ComponentCost(role=component, runtime=runtime, base=base, session=session,
                         c0=c0, c1=c1, c2=c2, unit="out_pixel" if component == "decoder" else "cell",
                         source="measured", samples=samples, repeated=list(rep), open_extra=open_extra)


def probe_at(bundle: Bundle, component: str, runtime: str, art, cost: ComponentCost, target: tuple[int, int], *,
             device: str = "cpu", threads: int = 1, timeout: float | None = None,
             options: dict[str, Any] | None = None) -> ComponentCost:
    """``cost`` with one more sample, a run at ``target`` (latent cells h, w) in a supervised child,
    refitted. Unchanged where the model does not vary with size, where the run's predicted
    footprint would take more than ``_TARGET_SHARE`` of this machine's available memory, or where
    the run fails or outlasts the probe's timeout (the smaller sizes ran: the extrapolation stands).
    """
    import psutil

    from edge_sdk.guard.supervise import run_supervised
    from edge_sdk.runtimes.registry import plan_options

    if cost.source != "measured" or not cost.samples or len({s[0] for s in cost.samples}) < 2:
        return cost  # a fixed-shape model: its one sample is every size
    h, w = int(target[0]), int(target[1])
    need = cost.base + cost.session + cost.activation(h * w, repeated=True)
    if need > _TARGET_SHARE * psutil.virtual_memory().available:
        return cost
    args = {"runtime": runtime, "path": str(art.path), "device": device, "threads": threads, "sizes": [[h, w]],
            "budget": 0, "model": bundle.model, "options": plan_options(runtime) if options is None else options,
            "sessions": False}
    try:
        got = run_supervised(_probe_child, args, timeout=probe_timeout() if timeout is None else timeout)
    except EdgeSDKError:
        return cost
    if not got["samples"]:
        return cost
    return _fitted(bundle, component, runtime, art, cost.base, cost.session, [*cost.samples, *got["samples"]],
                   cost.open_extra)


def streamed_call_peak(bundle: Bundle, component: str, runtime: str, parts: list, target: tuple[int, int], *,
                       batch: int = 1, device: str = "cpu", threads: int | None = None,
                       options: dict[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any] | None:
    """A streamed call measured: every part opened, run once at ``target`` (latent cells h, w;
    ``batch`` rows) on the tensors the parts before it left, and closed in turn, as a streamed call
    runs them (the carried tensors count); in a supervised child, cached by the parts' hashes.
    ``{"peak": bytes above the process, "held": [bytes each part's session holds once it has run,
    in part order] or None}``: ``held`` is what a part kept open (the plan's stream budget) costs.

    None where it cannot be measured here (a failure, no fork): the caller falls back to factors.
    Measured because no factor of a part's bytes holds: SD 1.5's largest int8 layer part (47 MB)
    peaks 78 MB above, its high-resolution attention parts (3 MB) 107 MB; and a kept part holds
    1.4x its bytes on ONNX Runtime, several times that on OpenVINO (int8 weights laid out as float).
    """
    from edge_sdk.guard.supervise import run_supervised
    from edge_sdk.runtimes.registry import plan_options

    threads = int(threads or os.cpu_count() or 1)
    options = plan_options(runtime) if options is None else dict(options)
    h, w = int(target[0]), int(target[1])
    digest = hashlib.sha256("".join(sha for p in parts for _, _, sha in p.artifact.files).encode())
    rows = f"-b{batch}" if batch != 1 else ""
    key = (f"stream-{digest.hexdigest()[:24]}-{runtime}-{device}-t{threads}{_options_tag(options)}-{h}x{w}{rows}"
           f"-v{PROFILE_VERSION}.json")
    cached = _cache_dir() / key
    if cached.is_file():
        try:
            got = json.loads(cached.read_text())
            return {"peak": int(got["peak"]), "held": [int(x) for x in got["held"]] if got.get("held") else None}
        except (ValueError, KeyError, TypeError):
            pass
    ins, _ = bundle.signature(component)
    args = {"runtime": runtime, "device": device, "threads": threads, "options": options, "model": bundle.model,
            "hw": [h, w], "batch": int(batch),
            "inputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in ins],
            "parts": [{"path": str(p.artifact.path), "index": p.index, "name": p.name,
                       "inputs": [t.name for t in p.inputs], "outputs": [t.name for t in p.outputs]}
                      for p in parts]}
    try:
        got = run_supervised(_stream_child, args, timeout=probe_timeout() if timeout is None else timeout)
    except EdgeSDKError:
        return None
    try:
        from edge_sdk.guard.fsutil import atomic_write

        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(cached, "w") as f:
            json.dump(got, f)
    except Exception:  # noqa: BLE001 - a read-only home only costs a re-probe next time
        pass
    return {"peak": int(got["peak"]), "held": [int(x) for x in got["held"]]}


def _stream_child(args: dict[str, Any]) -> dict[str, Any]:
    """In the child: the parts in turn, each opened, run on the carried tensors and closed; the
    largest high-water mark above the RSS before the first part (which has the call's inputs), and
    what each part's session holds once it has run (above the RSS before it opened, less its
    outputs)."""
    from edge_sdk.measure.memory import peak_rss_bytes, reset_peak_rss, rss_bytes
    from edge_sdk.runtimes.base import give_back_freed_memory
    from edge_sdk.runtimes.registry import get_runtime

    cls = get_runtime(args["runtime"])
    cls.probe()
    import edge_sdk.pipelines  # noqa: F401 - the run's imports, as in _probe_child

    env = _probe_feeds(args["inputs"], args["hw"], args["model"], batch=args.get("batch", 1))
    last = {name: p["index"] for p in args["parts"] for name in p["inputs"]}
    worst, peak, held = "", 0, []
    warm = cls.warm_up(args["device"], args["threads"], args["options"] or {})  # set-up in the base, as probed
    start = rss_bytes()
    for p in args["parts"]:
        if not reset_peak_rss():
            raise PlanError("cannot reset the peak-RSS mark here: stream parts not measured")
        before = rss_bytes()
        rt = cls(p["path"], device=args["device"], threads=args["threads"], options=args["options"])
        got = rt.run({name: env[name] for name in p["inputs"]})
        above = peak_rss_bytes() - start
        held.append(max(0, rss_bytes() - before - sum(np.asarray(v).nbytes for v in got.values())))
        rt.close()
        del rt
        for name in p["inputs"]:
            if last.get(name) == p["index"]:
                env.pop(name, None)
        env.update({name: np.array(got[name], copy=True) for name in p["outputs"]})
        del got
        give_back_freed_memory()
        if above > peak:
            worst, peak = p["name"], above
    del warm
    return {"peak": int(peak), "worst": worst, "held": held}
