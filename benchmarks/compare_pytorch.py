"""edge-sdk's best plan against the PyTorch eager loop with the diffusers scheduler, in one run.

For each model (``benchmarks/models.py``: the demo model and an SD-shaped UNet + VAE):

1. convert it (ONNX and OpenVINO IR, fp32 and static int8; cached) with ``edge_sdk.convert``;
2. find edge-sdk's best plan as ``edge-sdk tune`` does (board x86-64-generic, the candidates the
   planner gives per runtime and precision, each measured in its own process, fastest with a final
   image within 30 dB PSNR of the fp32 plan);
3. head to head, in this process and interleaved round by round so both see the same machine load:
   the PyTorch eager loop (diffusers ``DPMSolverMultistepScheduler``, torch.inference_mode,
   classifier-free guidance as one batch of two, VAE decode), edge-sdk's fp32 plan and its best
   plan, on the same steps, seed, resolution, conditioning and starting noise (edge-sdk's seeded
   noise is handed to the PyTorch loop). Medians and the ratios PyTorch / edge-sdk, and the PSNR of
   each edge-sdk image against PyTorch's;
4. peak resident memory (VmHWM) at 512x512 in separate fresh processes (PyTorch loop vs best plan).

    python benchmarks/compare_pytorch.py [--models demo,sd] [--steps 8] [--size 256] [--threads 1]

Threads are set explicitly, the same on both sides (torch.set_num_threads and every session's
intra-op threads); the default is 1 because on a 2-core machine shared with other work, two spinning
threads per process lose most of their time waiting for each other (RESULTS.md). Prints a
table and writes benchmarks/results/compare_pytorch.json (numbers quoted in RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "compare_pytorch.json"


# -- the PyTorch eager loop ------------------------------------------------------------------------
class TorchLoop:
    """diffusers scheduler + eager torch modules, fed edge-sdk's noise and conditioning."""

    def __init__(self, bm, threads: int) -> None:
        import torch
        from diffusers import DPMSolverMultistepScheduler

        torch.set_num_threads(threads)
        self.torch = torch
        self.bm = bm
        cfg = {k: v for k, v in bm.scheduler_config.items() if not k.startswith("_")}
        self.make_scheduler = lambda: DPMSolverMultistepScheduler(**cfg)

    def generate(self, *, steps: int, noise: np.ndarray, cond: Any, uncond: Any, guidance: float) -> np.ndarray:
        torch = self.torch
        sched = self.make_scheduler()
        sched.set_timesteps(steps)
        with torch.inference_mode():
            x = torch.from_numpy(noise) * sched.init_noise_sigma
            c = torch.cat([torch.as_tensor(uncond), torch.as_tensor(cond)])
            for t in sched.timesteps:
                xin = sched.scale_model_input(torch.cat([x, x]), t)
                out = self.bm.denoiser(xin, t.float().expand(2), c)
                u, k = out.chunk(2)
                x = sched.step(u + guidance * (k - u), t, x).prev_sample
            img = self.bm.decoder(x / self.bm.latent_scale)
        return img.numpy().astype(np.float32)


def conditioning(bm, bundle, seed: int) -> tuple[Any, Any, float]:
    """(cond, uncond, guidance) exactly as edge-sdk's pipeline makes them for batch 1, seed ``seed``."""
    from edge_sdk.measure.bench import generate_kwargs

    guidance = float(bundle.sampler.get("default_guidance", 1.0))
    if bundle.model.get("conditioning") == "class":  # no labels given: row 0 is class 0
        return np.array([0], np.int64), np.array([int(bundle.model["null_class"])], np.int64), guidance
    kw = generate_kwargs(bundle, steps=1, seed=seed, width=None, height=None)
    return kw["prompt_embeds"], kw["negative_prompt_embeds"], guidance


def start_noise(bundle, seed: int, size: int) -> np.ndarray:
    from edge_sdk.pipelines.seeds import RowNoise

    cells = size // int(bundle.model.get("vae_downsample", 8))
    return RowNoise(seed, 1).draw((int(bundle.model.get("in_channels", 4)), cells, cells))


# -- peak memory of the PyTorch loop in a fresh process ----------------------------------------------
def torch_child(model: str, size: int, steps: int, threads: int, seed: int) -> dict[str, Any]:
    from models import MODELS, bundle_for

    from edge_sdk.measure.memory import peak_rss_bytes, rss_bytes

    bm = MODELS[model]()
    bundle = bundle_for(bm, log=lambda *a: None)
    base = rss_bytes()
    loop = TorchLoop(bm, threads)
    cond, uncond, g = conditioning(bm, bundle, seed)
    t0 = time.perf_counter()
    loop.generate(steps=steps, noise=start_noise(bundle, seed, size), cond=cond, uncond=uncond, guidance=g)
    return {"peak_rss_mb": peak_rss_bytes() / 2**20, "base_rss_mb": base / 2**20, "seconds": time.perf_counter() - t0}


def measure_torch_memory(model: str, size: int, steps: int, threads: int, seed: int) -> dict[str, Any]:
    r = subprocess.run([sys.executable, __file__, "--child-torch", model, "--size", str(size), "--steps", str(steps),
                        "--threads", str(threads), "--seed", str(seed)], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


# -- one model --------------------------------------------------------------------------------------
def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from models import MODELS, bundle_for

    from edge_sdk.api import Generator
    from edge_sdk.measure.bench import measure, plan_label, psnr
    from edge_sdk.measure.tune import tune

    bm = MODELS[name]()
    bundle = bundle_for(bm)
    size = args.size if name == "sd" else int(bundle.model["sample_size"][0]) * bm.downsample
    print(f"\n== {name}: {bundle.root.name}, {size}x{size}, {args.steps} steps, {args.threads} threads", flush=True)
    if bm.note:
        print(f"   note: {bm.note}")
    tuned = tune(bundle, "x86-64-generic", steps=args.steps, size=(size, size), seed=args.seed, threads=args.threads,
                 repeats=args.tune_repeats, min_seconds=0, measure_memory=False, write=False,
                 progress=lambda i, n, lab: print(f"   tune [{i + 1}/{n}] {lab}", flush=True) if i < n else None)
    best = tuned.chosen
    fp32 = next(c for c in tuned.candidates if c.label == tuned.settings["reference"])
    from edge_sdk.planning.plan import Plan

    plans = {"edge-sdk fp32": Plan.from_json(fp32.plan), "edge-sdk best": Plan.from_json(best.plan)}
    gens = {k: Generator(bundle, p) for k, p in plans.items()}
    loop = TorchLoop(bm, args.threads)
    cond, uncond, g = conditioning(bm, bundle, args.seed)
    noise = start_noise(bundle, args.seed, size)
    from edge_sdk.measure.bench import generate_kwargs

    kw = generate_kwargs(bundle, steps=args.steps, seed=args.seed, width=size, height=size)
    runners = {"pytorch eager": lambda: loop.generate(steps=args.steps, noise=noise, cond=cond, uncond=uncond,
                                                      guidance=g),
               **{k: (lambda gen=gen: gen.generate(**kw).raw) for k, gen in gens.items()}}
    images = {k: fn() for k, fn in runners.items()}  # warm-up, and the images compared
    times: dict[str, list[float]] = {k: [] for k in runners}
    cpu: dict[str, list[float]] = {k: [] for k in runners}
    order = list(runners)
    for r in range(args.repeats):
        for k in order[r % len(order):] + order[:r % len(order)]:  # rotate who goes first
            t0, c0 = time.perf_counter(), time.process_time()
            runners[k]()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    for gen in gens.values():
        gen.close()
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    mins = {k: min(v) * 1e3 for k, v in times.items()}
    cpus = {k: statistics.median(v) * 1e3 for k, v in cpu.items()}
    quality = {k: psnr(images["pytorch eager"], images[k]) for k in gens}
    out: dict[str, Any] = {
        "model": name, "note": bm.note, "bundle": bundle.root.name, "size": size, "steps": args.steps,
        "threads": args.threads, "repeats": args.repeats, "best_plan": plan_label(plans["edge-sdk best"]),
        "median_ms": med, "min_ms": mins, "cpu_median_ms": cpus,
        "speedup_vs_pytorch_cpu": {k: cpus["pytorch eager"] / cpus[k] for k in gens},
        "speedup_vs_pytorch": {k: med["pytorch eager"] / med[k] for k in gens},
        "speedup_vs_pytorch_min": {k: mins["pytorch eager"] / mins[k] for k in gens},
        "psnr_vs_pytorch_db": quality,
        "tune": [{"plan": c.label, "ok": c.ok, "error": c.error, "e2e_ms": c.end_to_end_ms,
                  "e2e_min_ms": c.end_to_end_min_ms, "cpu_ms": c.cpu_ms, "peak_rss_mb": c.peak_rss_mb,
                  "psnr_vs_fp32_db": None if c.psnr_db is None else (c.psnr_db if np.isfinite(c.psnr_db) else "inf"),
                  "components": c.components} for c in tuned.candidates]}
    print(f"   best plan: {out['best_plan']}")
    for k in runners:
        extra = "" if k == "pytorch eager" else (f"  x{out['speedup_vs_pytorch'][k]:.2f} vs pytorch, "
                                                 f"PSNR vs pytorch {quality[k]:.1f} dB")
        if k != "pytorch eager":
            extra += f", CPU-time x{out['speedup_vs_pytorch_cpu'][k]:.2f}"
        print(f"   {k:14s} median {med[k]:9.1f} ms  min {mins[k]:9.1f} ms  CPU {cpus[k]:9.1f} ms{extra}", flush=True)
    # Peak memory at the memory size, each side in a fresh process; edge-sdk's best plan via bench.
    msize = args.memory_size if name == "sd" else size
    msteps = 2  # peak memory does not grow with steps: 2 steps exercise every stage
    tm = measure_torch_memory(name, msize, msteps, args.threads, args.seed)
    # Each edge-sdk plan as it is, and with ONNX Runtime's CPU arena and memory patterns off
    # (runtime options): the arena keeps a run's peak activations allocated, speed bought with memory.
    mem: dict[str, Any] = {"size": msize, "steps": msteps, "pytorch": tm}
    for key, p in (("best", plans["edge-sdk best"]), ("fp32", plans["edge-sdk fp32"])):
        if key == "fp32" and plan_label(p) == plan_label(plans["edge-sdk best"]):
            continue
        lean = Plan.from_json(p.to_json())
        for cp in lean.components.values():
            if cp.runtime == "onnxruntime":
                cp.options.update(cpu_mem_arena=False, mem_pattern=False)
        for suffix, plan_ in (("", p), ("_no_arena", lean)):
            if suffix and lean.to_json() == p.to_json():
                continue
            m = measure(bundle.root, plan_, steps=msteps, seed=args.seed, width=msize, height=msize, warmup=1,
                        repeats=1, min_seconds=0)
            mem[f"edge_sdk_{key}{suffix}"] = {"plan": plan_label(plan_), "peak_rss_mb": m.peak_rss_mb,
                                              "base_rss_mb": m.base_rss_mb, "error": m.error}
    out["memory"] = mem
    print(f"   peak RSS at {msize}x{msize}: pytorch {tm.get('peak_rss_mb', float('nan')):.0f} MB; "
          + "; ".join(f"{k} ({v['plan']}) {v['peak_rss_mb'] or float('nan'):.0f} MB"
                      for k, v in mem.items() if k.startswith("edge_sdk")), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="demo,sd")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--size", type=int, default=256, help="pixels (square) for the SD-shaped model's timing run")
    ap.add_argument("--memory-size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tune-repeats", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--child-torch", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_torch:
        print(json.dumps(torch_child(args.child_torch, args.size, args.steps, args.threads, args.seed)))
        return
    from edge_sdk.measure.bench import machine_info

    results = {"machine": machine_info(), "args": {k: v for k, v in vars(args).items() if k != "child_torch"},
               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "models": []}
    import torch

    results["machine"]["versions"].update(torch=torch.__version__, diffusers=__import__("diffusers").__version__)
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        results["models"].append(run_model(name, args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
