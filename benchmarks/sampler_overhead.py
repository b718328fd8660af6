"""Sampler overhead per step next to one denoiser call, at Stable Diffusion's latent shape.

For each numpy sampler: the median microseconds of ``scale_model_input`` + ``step`` (the whole
per-step cost the loop adds), measured over several full loops with a fixed cheap model output
so only sampler work is timed. Next to it: the median microseconds of one ONNX Runtime call of
a small conv denoiser (4 -> 32 -> 32 -> 4 channels, 3x3 convs, SiLU) built in this script, the
smallest thing that still looks like a denoiser; real UNets cost 100-1000x more.

    python benchmarks/sampler_overhead.py [--steps 20] [--repeats 5] [--threads 1]

Prints a table and writes benchmarks/results/sampler_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_sdk.samplers import available_samplers, get_sampler, randn

SHAPE = (1, 4, 64, 64)
RESULTS = Path(__file__).parent / "results" / "sampler_overhead.json"


def small_conv_denoiser(path: Path) -> None:
    """Write a 3-conv SiLU network taking (x, t) to ``path`` as ONNX."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.Generator(np.random.PCG64(0))

    def conv_weights(name: str, cout: int, cin: int) -> list:
        w = rng.standard_normal((cout, cin, 3, 3), dtype=np.float32) * np.float32(1 / np.sqrt(9 * cin))
        return [numpy_helper.from_array(w, f"{name}_w"),
                numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}_b")]

    inits = conv_weights("c1", 32, 4) + conv_weights("c2", 32, 32) + conv_weights("c3", 4, 32)
    inits.append(numpy_helper.from_array(np.array([1e-3], np.float32), "t_scale"))
    nodes = [
        helper.make_node("Mul", ["t", "t_scale"], ["t_s"]),
        helper.make_node("Add", ["x", "t_s"], ["x_t"]),
        helper.make_node("Conv", ["x_t", "c1_w", "c1_b"], ["h1"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["h1"], ["g1"]),
        helper.make_node("Mul", ["h1", "g1"], ["a1"]),
        helper.make_node("Conv", ["a1", "c2_w", "c2_b"], ["h2"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["h2"], ["g2"]),
        helper.make_node("Mul", ["h2", "g2"], ["a2"]),
        helper.make_node("Conv", ["a2", "c3_w", "c3_b"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "small_conv_denoiser",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE)),
         helper.make_tensor_value_info("t", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(SHAPE))],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def time_denoiser(threads: int, calls: int) -> float:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "denoiser.onnx"
        small_conv_denoiser(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = randn(0, SHAPE)
    t = np.array([500.0], np.float32)
    for _ in range(5):  # warm-up: first calls allocate arenas
        sess.run(["y"], {"x": x, "t": t})
    times = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        sess.run(["y"], {"x": x, "t": t})
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e3


def time_sampler(name: str, steps: int, repeats: int) -> tuple[float, int]:
    s = get_sampler(name, {})
    per_step = []
    for r in range(repeats + 1):  # first loop is warm-up
        s.set_timesteps(min(steps, 8) if name == "lcm" else steps)
        s.set_generator(r)
        x = randn(1, SHAPE) * np.float32(s.init_noise_sigma)
        out = randn(2, SHAPE)
        for i in range(len(s.timesteps)):
            t0 = time.perf_counter_ns()
            xin = s.scale_model_input(x, i)
            x = s.step(out, i, x)
            dt = time.perf_counter_ns() - t0
            if r:
                per_step.append(dt)
            del xin
    return statistics.median(per_step) / 1e3, len(s.timesteps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    ap.add_argument("--calls", type=int, default=50, help="denoiser calls to time")
    args = ap.parse_args()

    denoiser_us = time_denoiser(args.threads, args.calls)
    rows = []
    for name in available_samplers():
        us, n = time_sampler(name, args.steps, args.repeats)
        rows.append({"sampler": name, "median_us_per_step": round(us, 1), "loop_indices": n,
                     "percent_of_denoiser_call": round(100 * us / denoiser_us, 2)})

    print(f"latent {SHAPE}, float32; denoiser: small conv net on ONNX Runtime "
          f"({args.threads} thread(s)), median {denoiser_us:.0f} us/call")
    print(f"{'sampler':<16}{'us/step':>10}{'% of call':>11}{'indices':>9}")
    for r in rows:
        print(f"{r['sampler']:<16}{r['median_us_per_step']:>10.1f}{r['percent_of_denoiser_call']:>11.2f}{r['loop_indices']:>9}")

    result = {
        "latent_shape": list(SHAPE),
        "steps": args.steps,
        "repeats": args.repeats,
        "denoiser": {"kind": "small conv net (4-32-32-4, 3x3, SiLU), ONNX Runtime CPU",
                     "threads": args.threads, "median_us_per_call": round(denoiser_us, 1)},
        "samplers": rows,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "numpy": np.__version__},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=RESULTS.parent, prefix=".sampler_overhead.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(tmp, RESULTS)  # never a half-written results file
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
