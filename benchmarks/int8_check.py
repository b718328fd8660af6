"""Why int8 is (or is not) faster here: the denoiser's fp32, static int8 and dynamic int8 side by side.

For the denoiser of each benchmark model (``benchmarks/models.py``), on this CPU:

- which kernels ONNX Runtime actually runs: the op counts of its optimised graph (static QDQ int8
  should fuse into QLinearConv / QLinearMatMul; a float Conv left over means that part runs fp32);
- bare call latency, interleaved call by call, at the same input: ORT fp32, ORT static int8 (the
  bundle's int8-static artifact), ORT dynamic int8 (``quantize_dynamic`` of the fp32 artifact:
  ConvInteger, made here only for this comparison), and OpenVINO fp32 / int8 where the bundle has them;
- the CPU flags that decide it (VNNI / AMX: int8 dot products).

    python benchmarks/int8_check.py [--models sd,demo] [--threads 1] [--repeats 15] [--latent 32]

Writes benchmarks/results/int8_check.json.
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
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "int8_check.json"


def ort_ops(path: Path, threads: int) -> dict[str, int]:
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.optimized_model_filepath = str(Path(d) / "opt.onnx")
        so.log_severity_level = 3
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        m = onnx.load(so.optimized_model_filepath)
    c = collections.Counter(n.op_type for n in m.graph.node)
    keep = ("QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat", "ConvInteger", "DynamicQuantizeLinear",
            "QuantizeLinear", "DequantizeLinear", "Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm")
    return {k: c[k] for k in keep if c.get(k)}


def dynamic_int8(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    return dst


def static_int8_speed_only(src: Path, dst: Path, feeds: dict[str, np.ndarray]) -> Path:
    """QDQ static int8 (per-channel weights, as the converter makes it) calibrated on a few random
    inputs: right kernels, meaningless quality. For timing when the bundle has no int8-static."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.Generator(np.random.PCG64(1))
            self.items = iter([{k: (rng.standard_normal(v.shape).astype(v.dtype) if v.dtype.kind == "f" else v)
                                for k, v in feeds.items()} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return dst


def feeds_for(bundle, latent: int) -> dict[str, np.ndarray]:
    ins, _ = bundle.signature("denoiser")
    rng = np.random.Generator(np.random.PCG64(0))
    feeds = {ins[0].name: rng.standard_normal((2, 4, latent, latent), dtype=np.float32),
             ins[1].name: np.full((2,), 500.0, np.float32)}
    if len(ins) > 2:
        spec = ins[2]
        if spec.dtype.startswith("int"):
            feeds[spec.name] = np.array([3, int(bundle.model.get("null_class", 0))], np.int64)
        else:
            feeds[spec.name] = rng.standard_normal((2, *spec.shape[1:]), dtype=np.float32)
    return feeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="sd,demo")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--latent", type=int, default=32, help="latent cells per side for the SD-shaped model")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    from edge_sdk.bench import machine_info
    from edge_sdk.runtimes.registry import open_artifact

    from models import MODELS, bundle_for

    out = {"machine": machine_info(), "args": vars(args), "models": []}
    print(f"CPU {out['machine']['cpu_model']}, flags {', '.join(out['machine']['flags'])}; {args.threads} thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            bundle = bundle_for(MODELS[name]())
            latent = args.latent if name == "sd" else int(bundle.model["sample_size"][0])
            feeds = feeds_for(bundle, latent)
            arts = {(a.format, a.precision): a.path for a in bundle.artifacts("denoiser") if a.variant == ""}
            cands: dict[str, tuple[str, Path]] = {}
            if ("onnx", "fp32") in arts:
                cands["ort fp32"] = ("onnxruntime", arts[("onnx", "fp32")])
                cands["ort int8 dynamic (ConvInteger)"] = (
                    "onnxruntime", dynamic_int8(arts[("onnx", "fp32")], Path(tmp) / f"{name}-dyn.onnx"))
            if ("onnx", "int8-static") in arts:
                cands["ort int8 static (QDQ)"] = ("onnxruntime", arts[("onnx", "int8-static")])
            elif ("onnx", "fp32") in arts:  # the converter's int8 did not pass: time the same kind anyway
                cands["ort int8 static (QDQ, speed only)"] = ("onnxruntime", static_int8_speed_only(
                    arts[("onnx", "fp32")], Path(tmp) / f"{name}-qdq.onnx", feeds))
            for prec in ("fp32", "int8-static"):
                if ("openvino", prec) in arts:
                    cands[f"openvino {prec}"] = ("openvino", arts[("openvino", prec)])
            row = {"model": name, "latent": latent, "ops": {}, "median_ms": {}, "min_ms": {}}
            for label, (rt_name, path) in cands.items():
                if rt_name == "onnxruntime":
                    row["ops"][label] = ort_ops(path, args.threads)
            sessions = {}
            for label, (rt_name, path) in cands.items():
                try:
                    sessions[label] = open_artifact(path, rt_name, device="cpu" if rt_name == "onnxruntime" else "CPU",
                                                    threads=args.threads)
                    sessions[label].run(feeds)  # warm-up
                except Exception as e:  # noqa: BLE001 - a runtime that cannot open it is a finding, not a crash
                    row.setdefault("errors", {})[label] = f"{type(e).__name__}: {e}"[:300]
            times = {k: [] for k in sessions}
            for r in range(args.repeats):
                for k in list(sessions)[r % len(sessions):] + list(sessions)[:r % len(sessions)]:
                    t0 = time.perf_counter()
                    sessions[k].run(feeds)
                    times[k].append(time.perf_counter() - t0)
            for k, v in times.items():
                row["median_ms"][k] = statistics.median(v) * 1e3
                row["min_ms"][k] = min(v) * 1e3
            base = row["median_ms"].get("ort fp32")
            print(f"\n== {name} denoiser, batch 2 (CFG), latent {latent}x{latent}")
            for k in times:
                ratio = f"  {base / row['median_ms'][k]:.2f}x vs ort fp32" if base else ""
                print(f"   {k:32s} median {row['median_ms'][k]:8.2f} ms  min {row['min_ms'][k]:8.2f} ms{ratio}")
                if k in row["ops"]:
                    print(f"   {'':32s} ops: {row['ops'][k]}")
            for k, e in row.get("errors", {}).items():
                print(f"   {k}: failed: {e}")
            out["models"].append(row)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
