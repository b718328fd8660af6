"""Where the denoiser's time goes on each engine, per call, in one process (interleaved rounds).

For a converted bundle's denoiser (as edge-sdk runs it in a batched-CFG diffusion step):

- how attention reaches each engine: ScaledDotProductAttention layers in the OpenVINO IR (a direct
  PyTorch conversion keeps SDPA as one op; an ONNX import decomposes it), and the op types in ONNX
  Runtime's optimized graph (fused ``Attention`` / ``MultiHeadAttention`` contrib ops, or MatMul +
  Softmax), also after onnxruntime.transformers' UNet optimizer (fp32, CPU);
- per-call time of every variant: OpenVINO f32 vs bf16 inference precision, dynamic vs static
  shapes (``static_shapes='per_shape'``), the IR vs the ONNX file, ONNX Runtime with and without
  the transformers optimizer's attention fusion, batch 2 (CFG batched) vs two batch-1 calls.

    python benchmarks/peers/profile_denoiser.py BUNDLE [--size 256] [--threads 2] [--calls 10]

Writes benchmarks/results/profile_denoiser.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def ort_op_types(path: Path, threads: int) -> dict[str, int]:
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.optimized_model_filepath = str(Path(d) / "opt.onnx")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        m = onnx.load(so.optimized_model_filepath, load_external_data=False)
    return dict(collections.Counter(n.op_type for n in m.graph.node).most_common())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(HERE.parent / "results" / "profile_denoiser.json"))
    a = ap.parse_args()
    from edge_sdk.bundle import Bundle
    from edge_sdk.runtimes.registry import open_artifact

    b = Bundle.open(a.bundle)
    onnx_path = b.artifact("denoiser", "onnx", "fp32").path
    ir_path = b.artifact("denoiser", "openvino", "fp32").path
    xml = ir_path.read_text()
    found = {"openvino_ir_sdpa_layers": xml.count('type="ScaledDotProductAttention"'),
             "openvino_ir_softmax_layers": xml.count('type="SoftMax"'),
             "ort_optimized_ops": ort_op_types(onnx_path, a.threads)}
    n = a.size // 8
    rng = np.random.default_rng(0)
    with open_artifact(onnx_path, "onnxruntime", threads=1) as rt:
        names = [t.name for t in rt.inputs]
        seq, dim = rt.inputs[2].shape[1], rt.inputs[2].shape[2]
    seq = seq if isinstance(seq, int) else 77
    feeds2 = {names[0]: rng.standard_normal((2, 4, n, n)).astype(np.float32),
              names[1]: np.array([500.0, 500.0], np.float32),
              names[2]: rng.standard_normal((2, seq, dim)).astype(np.float32)}
    feeds1 = {k: v[:1] for k, v in feeds2.items()}

    variants: dict[str, tuple] = {
        "ort fp32": (onnx_path, "onnxruntime", {}),
        "openvino IR f32": (ir_path, "openvino", {"inference_precision": "f32"}),
        "openvino IR f32 per_shape": (ir_path, "openvino", {"inference_precision": "f32",
                                                            "static_shapes": "per_shape"}),
        "openvino IR bf16": (ir_path, "openvino", {"inference_precision": "bf16"}),
        "openvino IR bf16 per_shape": (ir_path, "openvino", {"inference_precision": "bf16",
                                                             "static_shapes": "per_shape"}),
        "openvino ONNX f32": (onnx_path, "openvino", {"inference_precision": "f32"}),
    }
    try:  # onnxruntime.transformers' UNet fusions (attention -> MultiHeadAttention), fp32, CPU
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model

        fo = FusionOptions("unet")
        # The CUDA-only fusions off (NhwcConv, GroupNorm, BiasSplitGelu, BiasAdd, packed QKV have
        # no CPU kernel); attention fusion (MultiHeadAttention, which has one) stays on.
        for flag in ("enable_nhwc_conv", "enable_group_norm", "enable_skip_group_norm", "enable_bias_splitgelu",
                     "enable_bias_add", "enable_packed_qkv", "enable_packed_kv", "enable_bias_skip_layer_norm"):
            if hasattr(fo, flag):
                setattr(fo, flag, False)
        fused = Path(tempfile.mkdtemp()) / "unet_fused.onnx"
        opt = optimize_model(str(onnx_path), model_type="unet", opt_level=0, use_gpu=False, optimization_options=fo)
        opt.save_model_to_file(str(fused))
        found["ort_transformers_optimizer_ops"] = dict(collections.Counter(
            nd.op_type for nd in opt.model.graph.node).most_common())
        variants["ort fp32 + transformers optimizer"] = (fused, "onnxruntime", {})
    except Exception as e:  # noqa: BLE001 - reported, the rest still measured
        found["ort_transformers_optimizer_error"] = f"{type(e).__name__}: {e}"[:300]
    sessions = {k: open_artifact(p, rt, threads=a.threads, options={**o, "cache_dir": False} if rt == "openvino" else o)
                for k, (p, rt, o) in variants.items()}
    ref = sessions["ort fp32"].run(feeds2)
    out_name = next(iter(ref))
    times: dict[str, list[float]] = {k: [] for k in sessions}
    times.update({f"{k} (2 x batch 1)": [] for k in ("ort fp32", "openvino IR f32", "openvino IR bf16")})
    err: dict[str, float] = {}
    for k, s in sessions.items():  # warm-up (compiles per shape), and the error vs ORT fp32
        got = next(iter(s.run(feeds2).values()))
        s.run(feeds1)
        err[k] = float(np.linalg.norm(got - ref[out_name]) / np.linalg.norm(ref[out_name]))
    for _ in range(a.rounds):
        for k, s in sessions.items():
            for _c in range(a.calls):
                t = time.perf_counter()
                s.run(feeds2)
                times[k].append(time.perf_counter() - t)
            split = f"{k} (2 x batch 1)"
            if split in times:
                for _c in range(a.calls):
                    t = time.perf_counter()
                    s.run(feeds1)
                    s.run(feeds1)
                    times[split].append(time.perf_counter() - t)
    for s in sessions.values():
        s.close()
    res = {"bundle": str(a.bundle), "size": a.size, "threads": a.threads, "batch": 2, "graph": found,
           "median_ms": {k: statistics.median(v) * 1e3 for k, v in times.items()},
           "min_ms": {k: min(v) * 1e3 for k, v in times.items()},
           "rel_l2_vs_ort_fp32": err}
    base = res["median_ms"]["ort fp32"]
    for k, v in sorted(res["median_ms"].items(), key=lambda kv: kv[1]):
        print(f"{k:42s} {v:8.2f} ms  (x{base / v:.2f} vs ort fp32)  min {res['min_ms'][k]:8.2f}  "
              f"rel L2 {err.get(k, float('nan')):.1e}")
    print(json.dumps(found)[:2000])
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
