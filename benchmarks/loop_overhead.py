"""What edge-sdk's sampler loop costs on top of the bare runtime calls, at 4, 8 and 20 steps, in one run.

Model: the SD-shaped UNet + VAE of ``benchmarks/models.py`` (ONNX fp32 on ONNX Runtime, CPU,
``--threads`` intra-op threads, classifier-free guidance batched: one call of batch 2 per step).

Per step count, interleaved round by round so both see the same machine load:

- **loop**: ``Generator.generate`` and its ``denoise`` timing: the whole sampler loop (noise,
  scale_model_input, the runtime adapter's feed checks and casts, the NaN/Inf check, guidance,
  the sampler step), decode excluded;
- **bare**: the same denoiser inputs (recorded from the loop) run straight through the ONNX Runtime
  ``InferenceSession.run`` of the same session, back to back: the floor the loop cannot beat.

Overhead = median(loop) / median(bare) - 1. Also reported: the loop's own time outside the runtime
calls in the same runs (loop wall minus the timed adapter calls), which the machine's noise
affects far less than a difference of two medians.

    python benchmarks/loop_overhead.py [--steps 4,8,20] [--size 256] [--threads 1] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "loop_overhead.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", default="4,8,20")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    from models import bundle_for, sd_model

    from edge_sdk.api import Generator
    from edge_sdk.measure.bench import BenchConfig, _CallTimer, generate_kwargs, machine_info, plan_for_config

    bundle = bundle_for(sd_model())
    plan = plan_for_config(bundle, BenchConfig("onnxruntime", "onnx", "fp32", "cpu"), threads=args.threads)
    gen = Generator(bundle, plan)
    timer = _CallTimer()
    timer.attach(gen.pipeline.sessions)
    # Record the exact denoiser feeds the loop makes (as the adapter receives them).
    rt = gen.pipeline.sessions._load("denoiser")
    recorded: list[dict[str, np.ndarray]] = []
    timed_run = rt.run

    def recording_run(feeds):
        recorded.append({k: np.array(v, copy=True) for k, v in feeds.items()})
        return timed_run(feeds)

    session = rt._session  # the ONNX Runtime InferenceSession itself
    dec = gen.pipeline.sessions._load("decoder")
    dec_run = dec.run
    dec_cpu: list[float] = []

    def cpu_timed_decode(feeds):
        c0 = time.process_time()
        out = dec_run(feeds)
        dec_cpu.append(time.process_time() - c0)
        return out

    dec.run = cpu_timed_decode
    out_names = [o.name for o in session.get_outputs()]
    rows = []
    for steps in [int(s) for s in args.steps.split(",")]:
        kw = generate_kwargs(bundle, steps=steps, seed=args.seed, width=args.size, height=args.size)
        rt.run = recording_run
        recorded.clear()
        gen.generate(**kw)  # warm-up, and the feeds
        rt.run = timed_run
        feeds = list(recorded)
        assert len(feeds) == steps, (len(feeds), steps)

        def bare(feeds: list = feeds) -> tuple[float, float]:
            t0, c0 = time.perf_counter(), time.process_time()
            for f in feeds:
                session.run(out_names, f)
            return time.perf_counter() - t0, time.process_time() - c0

        loop_s, bare_s, inside_s, loop_cpu, bare_cpu = [], [], [], [], []
        for r in range(args.repeats):
            for which in (("loop", "bare") if r % 2 == 0 else ("bare", "loop")):
                if which == "bare":
                    wall, cpu = bare()
                    bare_s.append(wall)
                    bare_cpu.append(cpu)
                else:
                    timer.times.clear()
                    dec_cpu.clear()
                    c0 = time.process_time()
                    res = gen.generate(**kw)
                    # CPU time of the loop alone: the whole generate less the decoder calls' CPU time.
                    loop_cpu.append(time.process_time() - c0 - sum(dec_cpu))
                    loop_s.append(res.timings["denoise"])
                    inside_s.append(sum(timer.times["denoiser"]))
        loop_m, bare_m = statistics.median(loop_s), statistics.median(bare_s)
        outside = [lo - ins for lo, ins in zip(loop_s, inside_s, strict=False)]
        row = {"steps": steps, "loop_ms": loop_m * 1e3, "bare_ms": bare_m * 1e3,
               "overhead_pct": (loop_m / bare_m - 1) * 100,
               "loop_min_ms": min(loop_s) * 1e3, "bare_min_ms": min(bare_s) * 1e3,
               "overhead_min_pct": (min(loop_s) / min(bare_s) - 1) * 100,
               "outside_calls_ms": statistics.median(outside) * 1e3,
               "outside_calls_pct": statistics.median(o / i for o, i in zip(outside, inside_s, strict=False)) * 100,
               "per_call_ms": bare_m / steps * 1e3,
               "loop_cpu_ms": statistics.median(loop_cpu) * 1e3, "bare_cpu_ms": statistics.median(bare_cpu) * 1e3,
               "overhead_cpu_pct": (statistics.median(loop_cpu) / statistics.median(bare_cpu) - 1) * 100}
        rows.append(row)
        print(f"{steps:3d} steps: loop {row['loop_ms']:8.1f} ms  bare {row['bare_ms']:8.1f} ms  "
              f"overhead {row['overhead_pct']:+6.2f}% (min-based {row['overhead_min_pct']:+6.2f}%)  "
              f"CPU-time overhead {row['overhead_cpu_pct']:+6.2f}%  "
              f"outside the calls {row['outside_calls_ms']:6.2f} ms = {row['outside_calls_pct']:.3f}%", flush=True)
    gen.close()
    result = {"machine": machine_info(), "args": vars(args), "bundle": bundle.root.name,
              "plan": "onnxruntime:onnx/fp32 cpu", "rows": rows,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
