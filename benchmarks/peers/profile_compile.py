"""How OpenVINO compile options change the per-call time of edge-sdk's denoiser and decoder, in one process.

For the bf16 per-shape plan's components (static shapes as a 256x256 batched-CFG run feeds them),
each variant compiled once and timed in interleaved rounds (so load swings hit every variant alike):
the plan as it is, other CPU properties (f16 inference, denormals flushed, thread pinning off), and
the same graph as the peers export it (``optimum-cli export openvino``, the IR GenAI runs), to see
whether a difference between pipelines is the graph or the way it is compiled. One ``PERF_COUNT``
run per component lists the node types the time goes to.

    python benchmarks/peers/profile_compile.py WORK [--size 256] [--threads 2] [--calls 8] [--rounds 3]

WORK is the harness's model folder (``/work/data/.../peers/sd``: edge-sdk.bundle, optimum-ov).
Writes benchmarks/results/profile_compile.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def feeds_for(model, size: int, text_len: int = 77, batch: int = 2) -> dict[str, np.ndarray]:
    """Feeds of the shapes a batched-CFG run at ``size`` gives, by the inputs' ranks and names."""
    rng = np.random.default_rng(0)
    out = {}
    for port in model.inputs:
        name, rank = port.get_any_name(), port.get_partial_shape().rank.get_length()
        dt = np.dtype(port.get_element_type().to_dtype())
        if rank == 4:  # latents: (batch, 4, size/8, size/8)
            shape = (batch if "sample" in name or "latent" in name else 1, 4, size // 8, size // 8)
        elif rank == 3:  # text states: (batch, tokens, width)
            shape = (batch, text_len, port.get_partial_shape()[2].get_length())
        elif rank == 1:
            shape = (batch,) if port.get_partial_shape()[0].is_dynamic else (port.get_partial_shape()[0].get_length(),)
        else:
            shape = ()
        out[name] = (rng.standard_normal(shape) * (0.5 if rank else 1) + (500 if rank < 2 else 0)).astype(dt)
    return out


def perf_by_type(request) -> dict[str, float]:
    """Milliseconds per executed node type of the last inference (PERF_COUNT), largest first."""
    ms: dict[str, float] = collections.Counter()
    for p in request.profiling_info:
        if p.status.name == "EXECUTED":
            ms[f"{p.node_type} ({p.exec_type})"] += p.real_time.total_seconds() * 1e3
    return {k: round(v, 2) for k, v in sorted(ms.items(), key=lambda kv: -kv[1])[:12]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated variant-name substrings")
    ap.add_argument("--out", type=Path, default=HERE.parent / "results" / "profile_compile.json")
    a = ap.parse_args()
    import openvino as ov

    core = ov.Core()
    bundle = a.work / "edge-sdk.bundle"
    ir = {"denoiser": bundle / "denoiser/openvino/fp32/model.xml",
          "decoder": bundle / "decoder/openvino/fp32/model.xml"}
    fp16 = {k: bundle / f"{k}/openvino/fp16/model.xml" for k in ir}
    peer = {"denoiser": a.work / "optimum-ov/unet/openvino_model.xml",
            "decoder": a.work / "optimum-ov/vae_decoder/openvino_model.xml"}
    base = {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": a.threads}
    variants: dict[str, tuple[dict[str, Path], dict[str, Any]]] = {
        "plan (bf16, static)": (ir, base),
        "f16 inference": (ir, {**base, "INFERENCE_PRECISION_HINT": "f16"}),
        "denormals flushed": (ir, {**base, "CPU_DENORMALS_OPTIMIZATION": True}),
        "pinning off": (ir, {**base, "ENABLE_CPU_PINNING": False}),
        "peers' IR (optimum-cli), bf16, static": (peer, base),
        # Snippets: the CPU plugin's fused subgraphs (MHA, eltwise chains), where most of the time goes.
        "snippets off": (ir, {**base, "SNIPPETS_MODE": "DISABLE"}),
        "snippets, callback ignored": (ir, {**base, "SNIPPETS_MODE": "IGNORE_CALLBACK"}),
    }
    if all(p.is_file() for p in fp16.values()):
        variants["fp16 weights IR, bf16"] = (fp16, base)
    if a.only:
        keys = [k.strip() for k in a.only.split(",")]
        variants = {k: v for k, v in variants.items() if any(s in k for s in keys)}
    compiled: dict[tuple[str, str], tuple[Any, dict[str, np.ndarray]]] = {}
    failed: dict[str, str] = {}
    for vname, (paths, cfg) in variants.items():
        for comp, path in paths.items():
            model = core.read_model(str(path))
            feeds = feeds_for(model, a.size, batch=2 if comp == "denoiser" else 1)
            model.reshape({k: list(v.shape) for k, v in feeds.items()})
            try:
                c = core.compile_model(model, "CPU", {**cfg, "PERF_COUNT": True})
            except RuntimeError as e:  # a property this plugin refuses for this graph: reported, not fatal
                failed[vname] = [ln for ln in str(e).splitlines() if ln.strip()][-1][:300]
                print(f"{vname}: {failed[vname]}", flush=True)
                continue
            req = c.create_infer_request()
            req.infer(feeds)  # first call: allocation, caches
            compiled[(vname, comp)] = (req, feeds)
    times: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for _ in range(a.rounds):
        for key, (req, feeds) in compiled.items():
            for _ in range(a.calls):
                t = time.perf_counter()
                req.infer(feeds)
                times[key].append(time.perf_counter() - t)
    out: dict[str, Any] = {"size": a.size, "threads": a.threads, "calls": a.calls, "rounds": a.rounds,
                           "load_average": os.getloadavg(), "openvino": ov.__version__, "failed": failed,
                           "variants": {}}
    ref = {comp: statistics.median(times[(next(iter(variants)), comp)]) for comp in ir}
    for vname in variants:
        row: dict[str, Any] = {}
        for comp in ir:
            if (vname, comp) not in times:
                continue
            med = statistics.median(times[(vname, comp)])
            row[comp] = {"median_ms": round(med * 1e3, 2), "min_ms": round(min(times[(vname, comp)]) * 1e3, 2),
                         "vs_plan": round(ref[comp] / med, 3),
                         "by_node_type_ms": perf_by_type(compiled[(vname, comp)][0])}
        out["variants"][vname] = row
        print(f"{vname:42s} " + "  ".join(f"{c} {r['median_ms']:8.2f} ms (x{r['vs_plan']:.2f})"
                                           for c, r in row.items()), flush=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
