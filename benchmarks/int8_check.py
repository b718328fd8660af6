"""Why int8 is (or is not) faster here: the denoiser's fp32, static int8 and dynamic int8 side by side.

For the denoiser of each benchmark model (``benchmarks/models.py``), on this CPU:

- which kernels ONNX Runtime actually runs: the op counts of its optimised graph (static QDQ int8
  should fuse into QLinearConv / QLinearMatMul; a float Conv left over means that part runs fp32);
- bare call latency, interleaved call by call, at the same input: ORT fp32; ORT static int8: the
  bundle's int8-static artifact when the converter made one, and the same QDQ quantization done
  here (all ops, and Conv only), calibrated on edge-sdk's own fp32 sampling trajectory; ORT dynamic
  int8 (``quantize_dynamic`` of the fp32 artifact: ConvInteger, made here only for this comparison);
  OpenVINO fp32 / int8 where the bundle has them;
- for every static int8 variant, the whole loop's final-image PSNR against fp32 on an unseen seed
  and both loops' CPU time per image;
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


def unshare_initializers(src: Path, dst: Path) -> Path:
    """A copy where every initializer feeds one node: ORT's QDQ quantizer refuses weights shared by
    several nodes ("shared mode is not supported for weight yet"), which the dynamo exporter makes
    when it deduplicates equal constants."""
    import onnx

    m = onnx.load(str(src))
    inits = {i.name: i for i in m.graph.initializer}
    seen: set[str] = set()
    for node in m.graph.node:
        for k, name in enumerate(node.input):
            if name not in inits:
                continue
            if name in seen:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = f"{name}__{node.name or id(node)}_{k}"
                m.graph.initializer.append(copy)
                node.input[k] = copy.name
            else:
                seen.add(name)
    onnx.save(m, str(dst))
    return dst


def static_int8(src: Path, dst: Path, calibration: list[dict[str, np.ndarray]],
                op_types: list[str] | None = None) -> Path:
    """QDQ static int8 the way the converter makes it (per-channel int8 weights, uint8 activations),
    calibrated on ``calibration`` (the denoiser's inputs along real sampling trajectories)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self):
            return next(self.items, None)

    src = unshare_initializers(src, dst.with_suffix(".unshared.onnx"))
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=op_types)
    return dst


def trajectory_feeds(bundle, plan, kw_for, seeds=(0, 1, 2), limit: int = 48) -> list[dict[str, np.ndarray]]:
    """The denoiser's inputs at every step of edge-sdk's own fp32 loop, over a few seeds."""
    from edge_sdk.api import Generator

    got: list[dict[str, np.ndarray]] = []
    with Generator(bundle, plan) as gen:
        rt = gen.pipeline.sessions._load("denoiser")
        inner = rt.run

        def recording(feeds):
            got.append({k: np.array(v, copy=True) for k, v in feeds.items()})
            return inner(feeds)

        rt.run = recording
        for seed in seeds:
            gen.generate(**kw_for(seed))
    idx = np.linspace(0, len(got) - 1, min(limit, len(got))).round().astype(int)
    return [got[i] for i in idx]


def pipeline_quality(bundle, plan, int8_path: Path, kw: dict, threads: int, repeats: int) -> dict[str, float]:
    """Final image PSNR of the whole loop with the int8 denoiser vs fp32 (same seed), and both loops'
    end-to-end times, interleaved."""
    from edge_sdk.api import Generator
    from edge_sdk.measure.bench import psnr
    from edge_sdk.runtimes.registry import open_artifact

    fp32 = Generator(bundle, plan)
    int8 = Generator(bundle, plan)
    # The int8 session replaces the fp32 one in the same pipeline (nothing else changes).
    int8.pipeline.sessions._open["denoiser"] = open_artifact(int8_path, "onnxruntime", device="cpu", threads=threads)
    ref, got = fp32.generate(**kw).raw, int8.generate(**kw).raw
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for r in range(repeats):
        for k, g in ((("fp32", fp32), ("int8", int8)) if r % 2 == 0 else (("int8", int8), ("fp32", fp32))):
            c0 = time.process_time()
            g.generate(**kw)
            times[k].append(time.process_time() - c0)
    fp32.close()
    int8.close()
    return {"psnr_db": psnr(ref, got), "e2e_cpu_ms_fp32": statistics.median(times["fp32"]) * 1e3,
            "e2e_cpu_ms_int8": statistics.median(times["int8"]) * 1e3}


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
    ap.add_argument("--steps", type=int, default=8, help="sampler steps for calibration and the quality check")
    ap.add_argument("--latent", type=int, default=32, help="latent cells per side for the SD-shaped model")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    from models import MODELS, bundle_for

    from edge_sdk.measure.bench import machine_info
    from edge_sdk.runtimes.registry import open_artifact

    out = {"machine": machine_info(), "args": vars(args), "models": []}
    print(f"CPU {out['machine']['cpu_model']}, flags {', '.join(out['machine']['flags'])}; {args.threads} thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            bundle = bundle_for(MODELS[name]())
            latent = args.latent if name == "sd" else int(bundle.model["sample_size"][0])
            feeds = feeds_for(bundle, latent)
            arts = {(a.format, a.precision): a.path for a in bundle.artifacts("denoiser") if a.variant == ""}
            cands: dict[str, tuple[str, Path]] = {}
            quality = None
            if ("onnx", "fp32") in arts:
                cands["ort fp32"] = ("onnxruntime", arts[("onnx", "fp32")])
                cands["ort int8 dynamic (ConvInteger)"] = (
                    "onnxruntime", dynamic_int8(arts[("onnx", "fp32")], Path(tmp) / f"{name}-dyn.onnx"))
            if ("onnx", "fp32") in arts:
                # Beside the converter's int8-static artifact (if it made one), the same QDQ
                # quantization done here, all ops and Conv only, calibrated on edge-sdk's own fp32
                # sampling trajectory; each with the whole loop's final-image PSNR vs fp32.
                from edge_sdk.measure.bench import BenchConfig, generate_kwargs, plan_for_config

                plan = plan_for_config(bundle, BenchConfig("onnxruntime", "onnx", "fp32", "cpu"), threads=args.threads)
                size = latent * int(bundle.model.get("vae_downsample", 8))

                def kw_for(seed, size=size, bundle=bundle):
                    return generate_kwargs(bundle, steps=args.steps, seed=seed, width=size, height=size)

                calib = trajectory_feeds(bundle, plan, kw_for)
                q = static_int8(arts[("onnx", "fp32")], Path(tmp) / f"{name}-qdq.onnx", calib)
                # Convolutions only: attention's activation x activation MatMuls stay float.
                qc = static_int8(arts[("onnx", "fp32")], Path(tmp) / f"{name}-qdq-conv.onnx", calib, ["Conv"])
                int8s = {"all ops, calibrated here": q, "Conv only, calibrated here": qc}
                if ("onnx", "int8-static") in arts:
                    int8s = {"converter's int8-static": arts[("onnx", "int8-static")], **int8s}
                reps = max(3, args.repeats // 3)
                quality = {}
                for kind, path in int8s.items():
                    cands[f"ort int8 static ({kind})"] = ("onnxruntime", path)
                    quality[kind] = pipeline_quality(bundle, plan, path, kw_for(10), args.threads, reps)
            for prec in ("fp32", "int8-static"):
                if ("openvino", prec) in arts:
                    cands[f"openvino {prec}"] = ("openvino", arts[("openvino", prec)])
            row = {"model": name, "latent": latent, "ops": {}, "median_ms": {}, "min_ms": {}, "cpu_ms": {}}
            if quality:
                row["pipeline"] = {"steps": args.steps, "seed": 10, **quality}  # per quantization kind
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
            cpu = {k: [] for k in sessions}
            for r in range(args.repeats):
                for k in list(sessions)[r % len(sessions):] + list(sessions)[:r % len(sessions)]:
                    t0, c0 = time.perf_counter(), time.process_time()
                    sessions[k].run(feeds)
                    times[k].append(time.perf_counter() - t0)
                    cpu[k].append(time.process_time() - c0)
            for k, v in times.items():
                row["median_ms"][k] = statistics.median(v) * 1e3
                row["min_ms"][k] = min(v) * 1e3
                row["cpu_ms"][k] = statistics.median(cpu[k]) * 1e3
            base = row["median_ms"].get("ort fp32")
            cbase = row["cpu_ms"].get("ort fp32")
            print(f"\n== {name} denoiser, batch 2 (CFG), latent {latent}x{latent}")
            for k in times:
                ratio = (f"  {base / row['median_ms'][k]:.2f}x (CPU time {cbase / row['cpu_ms'][k]:.2f}x) vs ort fp32"
                         if base else "")
                print(f"   {k:38s} median {row['median_ms'][k]:8.2f} ms  min {row['min_ms'][k]:8.2f} ms  "
                      f"CPU {row['cpu_ms'][k]:8.2f} ms{ratio}")
                if k in row["ops"]:
                    print(f"   {'':38s} ops: {row['ops'][k]}")
            for kind, qd in (quality or {}).items():
                print(f"   whole loop, {args.steps} steps, seed 10, int8 denoiser ({kind}) vs fp32: final image PSNR "
                      f"{qd['psnr_db']:.1f} dB; CPU time {qd['e2e_cpu_ms_fp32']:.0f} -> "
                      f"{qd['e2e_cpu_ms_int8']:.0f} ms per image")
            for k, e in row.get("errors", {}).items():
                print(f"   {k}: failed: {e}")
            out["models"].append(row)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
