"""Low-memory rungs of issue 16 on the SD-shaped test model: peak RSS, time and PSNR per plan.

The SD-shaped UNet + VAE of ``benchmarks/models.py`` is converted once with
``--attention sliced:N`` (ONNX fp32 + int8-weight, full and ``sliced`` variants). At --size
(default 512x512: 64x64 latent cells, 4096 attention tokens) it runs 2 steps with guidance, each
plan in a fresh child process (``edge_sdk.measure.bench.measure``: the child's VmHWM is the peak):

- ``full``: the fastest fp32 plan (full attention, ONNX Runtime arena as the plan leaves it);
- ``sliced``: the same with the ``sliced`` denoiser and decoder;
- ``sliced+int8w``: sliced attention with int8 weights behind DequantizeLinear.

Beside each: the planner's estimate for that plan, and the final image's PSNR against ``full``.
PyTorch's peak on the same model and size is in benchmarks/RESULTS.md (685 MB at 512x512).

Not run here (time): the SD 1.5 folder at published dimensions per board; see RESULTS.md.

    python benchmarks/low_memory.py [--size 512] [--chunks 16] [--threads 2] [--runtime openvino]

``--runtime openvino`` plans on the x86-64 board (the Pis list no OpenVINO) and writes
``results/low_memory_openvino.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
RESULTS = Path(__file__).parent / "results"
MB = 1024 * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="bundle folder (default: a cache folder)")
    ap.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "openvino"])
    args = ap.parse_args()
    board_name = "rpi5-8gb" if args.runtime == "onnxruntime" else "x86-64-generic"
    results = RESULTS / ("low_memory.json" if args.runtime == "onnxruntime" else f"low_memory_{args.runtime}.json")

    import torch
    from models import sd_model

    from edge_sdk.bundle import Bundle
    from edge_sdk.cache import cache_dir
    from edge_sdk.converters.convert import convert
    from edge_sdk.measure.bench import measure, psnr
    from edge_sdk.planning.plan import Plan
    from edge_sdk.planning.planner import PlanRequest, plan

    bm = sd_model(32)
    path = Path(args.out or cache_dir("bench") / f"sd-sliced{args.chunks}-{bm.key()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if (path / "manifest.json").is_file():
        bundle = Bundle.open(path)
    else:
        torch.set_num_threads(1)
        print(f"converting the SD-shaped model with attention sliced:{args.chunks} -> {path}", flush=True)
        bundle = convert(bm.spec, path, formats="onnx", precisions="fp32,int8-weight",
                         attention=f"sliced:{args.chunks}", samples=1, overwrite=True)
    req = PlanRequest(height=args.size, width=args.size, precision="fp32", runtime=args.runtime, measure=True)
    fastest = plan(bundle, board_name, req)
    rows = {}
    variants = {"full": ("fp32", ""), "sliced": ("fp32", "sliced"), "sliced+int8w": ("int8-weight", "sliced")}
    for label, (prec, variant) in variants.items():
        p = Plan.from_json(fastest.to_json())
        for cp in p.components.values():
            cp.precision, cp.variant, cp.threads, cp.resident = prec, variant, args.threads, True
        p.cfg = "batched"
        print(f"measuring {label} at {args.size}x{args.size} ...", flush=True)
        r = measure(bundle.root, p, steps=2, seed=0, width=args.size, height=args.size, guidance=7.5,
                    warmup=1, repeats=1, min_seconds=0)
        rows[label] = r
    # The planner's estimate of each plan's rung (its measured per-artifact probes, cached).
    from edge_sdk.planning import planner as P
    from edge_sdk.planning.board import load_board
    from edge_sdk.planning.board_detect import resolve_board

    board, cells = load_board(resolve_board(board_name)), args.size // 8
    estimates = {}
    for label, (prec, variant) in variants.items():
        r = PlanRequest(height=args.size, width=args.size, precision=prec, runtime=args.runtime, measure=True)
        ch = {c: P._choose(bundle, board, c, r, (cells, cells), None, P.usable_runtimes(),
                           alt=variant if c in ("denoiser", "decoder") else "") for c in bundle.components}
        est = P._stage_estimates(bundle, ch, P._Rung("batched", False, False, None), (cells, cells), 8, 1, True)
        estimates[label] = max(est.values()) / MB
    ref = rows["full"]
    out = {"model": "sd-shaped (benchmarks/models.py)", "runtime": args.runtime, "size": args.size, "steps": 2,
           "guidance": 7.5,
           "chunks": args.chunks, "threads": args.threads, "pytorch_peak_mb_from_RESULTS": 685,
           "fastest_plan_estimate_mb": round(fastest.estimates["peak"] / MB, 1), "plans": {}}
    for label, r in rows.items():
        d = {"ok": r.ok, "error": r.error, "peak_rss_mb": r.peak_rss_mb, "seconds": (r.end_to_end_ms or 0) / 1e3,
             "psnr_vs_full_db": None, "estimate_mb": round(estimates[label], 1)}
        if r.ok and ref.ok and label != "full":
            d["psnr_vs_full_db"] = psnr(ref.image, r.image, bundle.model.get("output_range", [-1, 1]))
        out["plans"][label] = d
        print(f"{label:14s} peak {r.peak_rss_mb or float('nan'):7.0f} MB  estimate {d['estimate_mb']:7.0f} MB  "
              f"{d['seconds']:7.1f} s  "
              f"PSNR vs full {d['psnr_vs_full_db']}", flush=True)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
