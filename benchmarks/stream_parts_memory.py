"""Memory of each stream part of a streamed denoiser, as the streamed session uses them (issue 16).

For every part in run order, in one process (as ``edge_sdk.pipelines.streamed`` runs them): the
kernel's high-water mark (VmHWM, reset before each step) while the part's session opens and while
it runs one call, above the RSS before the part opened (which holds the process and the carried
tensors), then the RSS after it is closed. The inputs are a real chain: random latents, timestep
and text states fed through the parts in turn. Shows which part and which step (open or run) sets
a streamed run's peak, against what the planner's streamed estimate counts.

    python benchmarks/stream_parts_memory.py BUNDLE [--precision int8-weight] [--size 512] [--batch 1]
        [--option cpu_mem_arena=0]   (writes benchmarks/results/stream_parts_memory.json)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
MB = 2**20


def main() -> None:
    from edge_sdk.bundle import Bundle
    from edge_sdk.errors import PlanError
    from edge_sdk.measure.memory import peak_rss_bytes, reset_peak_rss, rss_bytes
    from edge_sdk.planning.planner import PlanRequest, plan
    from edge_sdk.runtimes.base import give_back_freed_memory
    from edge_sdk.runtimes.registry import open_artifact

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--format", default="onnx")
    ap.add_argument("--precision", default="int8-weight")
    ap.add_argument("--runtime", default="onnxruntime")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--board", help="also record this board's plan estimate for the streamed rung")
    ap.add_argument("--option", action="append", default=[], help="runtime option KEY=0|1 (e.g. cpu_mem_arena=0)")
    ap.add_argument("--out", type=Path, default=RESULTS / "stream_parts_memory.json")
    args = ap.parse_args()
    opts = {"mem_pattern": False}
    for o in args.option:
        k, _, v = o.partition("=")
        opts[k] = bool(int(v))
    b = Bundle.open(args.bundle)
    parts = b.stream_parts("denoiser", args.format, args.precision)
    ins, _ = b.signature("denoiser")
    h = w = args.size // 8
    rng = np.random.default_rng(0)
    env: dict[str, np.ndarray] = {}
    for t in ins:
        shape = [args.batch if d == "batch" else h if d == "height" else w if d == "width" else
                 (d if isinstance(d, int) else 77) for d in t.shape]
        env[t.name] = (np.full(shape, 500, t.dtype) if "time" in t.name else
                       rng.standard_normal(shape).astype(t.dtype))
    last = {}
    for p in parts:
        for t in p.inputs:
            last[t.name] = p.index
    rows = []
    start = rss_bytes()
    for p in parts:
        before = rss_bytes()
        reset_peak_rss()
        t0 = time.perf_counter()
        rt = open_artifact(p.artifact.path, args.runtime, device="cpu", threads=args.threads, options=opts,
                           verified=p.artifact.files)  # as the streamed session opens it
        open_s = time.perf_counter() - t0
        opened = rss_bytes()
        open_peak = peak_rss_bytes()
        reset_peak_rss()
        t0 = time.perf_counter()
        got = rt.run({t.name: env[t.name] for t in p.inputs})
        run_s = time.perf_counter() - t0
        run_peak = peak_rss_bytes()
        rt.close()
        del rt
        for t in p.inputs:
            if last.get(t.name) == p.index:
                env.pop(t.name, None)
        env.update({t.name: np.array(got[t.name], copy=True) for t in p.outputs})
        del got
        give_back_freed_memory()
        held = sum(v.nbytes for v in env.values())
        rows.append({"part": p.name, "artifact_mb": p.artifact.size / MB, "rss_before_mb": before / MB,
                     "open_peak_above_mb": (open_peak - before) / MB, "session_mb": (opened - before) / MB,
                     "run_peak_above_mb": (run_peak - before) / MB, "rss_after_close_mb": rss_bytes() / MB,
                     "held_after_mb": held / MB, "open_s": open_s, "run_s": run_s})
        print(json.dumps(rows[-1]), flush=True)
    worst = max(rows, key=lambda r: r["rss_before_mb"] + max(r["open_peak_above_mb"], r["run_peak_above_mb"]))
    out = {"bundle": str(args.bundle), "precision": args.precision, "size": args.size, "batch": args.batch,
           "threads": args.threads, "options": opts, "rss_start_mb": start / MB, "parts": rows,
           "worst_part": worst["part"],
           "peak_mb": worst["rss_before_mb"] + max(worst["open_peak_above_mb"], worst["run_peak_above_mb"]),
           "load": os.getloadavg()}
    if args.board:
        try:
            p = plan(b, args.board, PlanRequest(height=args.size, width=args.size, guidance=7.5))
            out["plan"] = {"board": args.board, "rung": p.rung,
                           "estimates_mb": {k: v / MB for k, v in p.estimates.items()}}
        except PlanError as e:  # the refusal is a result too
            out["plan"] = {"board": args.board, "refused": e.message}
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("worst_part", "peak_mb", "rss_start_mb")}))


if __name__ == "__main__":
    main()
