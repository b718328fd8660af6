"""Peak memory of a large decode, untiled and tiled under a small cap, next to the planner's estimates.

Builds a small latent-diffusion model from diffusers classes (UNet2DModel + an AutoencoderKL
decoder with 3 blocks, 4 px per latent cell; the model of tests/boards/decoder_heavy.py with a
wider decoder), converts it to ONNX with ``edge_sdk.convert``, then generates one image at
--size (default 512x512, i.e. 128x128 latent cells) twice, each run in a fresh child process:

- **untiled**: the plan for a 64 GB board (whole-image decode);
- **capped**: the plan for a board profile written here with a --cap MB memory cap (the planner
  picks tiles, sequential loading, ... so the estimate fits), run under ``MemoryWatch``;
- **untiled under the cap**: the untiled plan run under the same cap, to show the in-process
  watcher stop it (at the next component call: one decoder call overshoots first);
- **untiled, child killed**: the same, watched from the parent, which kills the child the moment
  it crosses the cap (how a supervised run is kept under it without cgroups).

In each child the kernel's peak-RSS mark (VmHWM) is read at the end of denoising, reset, and read
again after decoding, so each stage's peak is its own. Prints a table of estimate vs measured per
stage and writes benchmarks/results/tiled_decode_memory.json.

    python benchmarks/tiled_decode_memory.py [--size 512] [--cap 768] [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "tiled_decode_memory.json"
MB = 1024 * 1024

CHILD = r"""
import json, sys
import edge_sdk
from edge_sdk.bundle import Bundle
from edge_sdk.errors import MemoryCapError
from edge_sdk.measure.memory import MemoryWatch, peak_rss_bytes, reset_peak_rss, rss_bytes
from edge_sdk.planning.plan import Plan

bundle, plan_json, size, cap = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
p = Plan.from_json(json.loads(plan_json))
gen = edge_sdk.load(Bundle.open(bundle), plan=p)
marks = {"loaded": rss_bytes()}

def cb(info):
    if info.index == info.total - 1:  # the end of denoising: its stage peak, then a fresh mark
        marks["denoise"] = peak_rss_bytes()
        reset_peak_rss()

out = {"marks": marks}
try:
    with MemoryWatch(cap or None, interval_s=0.005, where="the benchmark run") as w:
        gen.generate(steps=2, seed=0, height=size, width=size, guidance=1.0, callback=cb)
    marks["decode"] = peak_rss_bytes()
    out["watched_peak"] = w.peak_bytes
except MemoryCapError as e:
    out["stopped"] = e.message
    out["rss_when_stopped"] = rss_bytes()
print("RESULT" + json.dumps(out))
"""


def build_bundle(path: Path) -> None:
    import edge_sdk

    spec = importlib.util.spec_from_file_location("decoder_heavy", REPO / "tests" / "boards" / "decoder_heavy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    edge_sdk.convert(mod.build_spec(decoder_channels=(64, 128, 128), latent=32), path, formats="onnx",
                     precisions="fp32", samples=1, overwrite=True)


def write_board(path: Path, cap_mb: int, threads: int) -> None:
    """A CPU board with ``cap_mb`` of memory (a copy of the generic host with the cap changed)."""
    from importlib import resources

    text = resources.files("edge_sdk.boards").joinpath("x86-64-generic.toml").read_text()
    text = text.replace('name = "x86-64-generic"', 'name = "small-cap"')
    text = text.replace('ram_mb = "detect"', f"ram_mb = {max(cap_mb * 2, 1024)}")
    text = text.replace("cap_fraction = 0.75", f"cap_mb = {cap_mb}")
    text = text.replace("default = 4\n", f"default = {threads}\n")
    path.write_text(text)


def run_child(bundle: Path, plan, size: int, cap: int, *, kill_at: int = 0) -> dict:
    """Run CHILD; with ``kill_at`` the parent watches it and SIGKILLs it when it crosses that many bytes."""
    from edge_sdk.errors import MemoryCapError
    from edge_sdk.measure.memory import MemoryWatch

    argv = [sys.executable, "-c", CHILD, str(bundle), json.dumps(plan.to_json()), str(size), str(cap)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch = MemoryWatch(kill_at, interval_s=0.002, pid=proc.pid, kill=True, where="the child run").start() \
        if kill_at else None
    out, err = proc.communicate(timeout=1800)
    if watch is not None:
        watch.stop()
        try:
            watch.check()
        except MemoryCapError as e:
            return {"killed": e.message, "watched_peak": watch.peak_bytes}
    line = next((ln for ln in out.splitlines() if ln.startswith("RESULT")), None)
    if line is None:
        raise SystemExit(f"child failed ({proc.returncode}): {err[-3000:]}")
    return json.loads(line[len("RESULT"):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512, help="output pixels per side")
    ap.add_argument("--cap", type=int, default=768, help="memory cap of the small board, MB")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "edge-sdk-bench-tiled")
    args = ap.parse_args()

    from edge_sdk.bundle import Bundle
    from edge_sdk.planning.planner import PlanRequest, plan

    args.work.mkdir(parents=True, exist_ok=True)
    bundle_path = args.work / "decoder-heavy-wide.bundle"
    if not (bundle_path / "manifest.json").exists():
        build_bundle(bundle_path)
    board_path = args.work / "small-cap.toml"
    write_board(board_path, args.cap, args.threads)
    os.environ.setdefault("EDGE_SDK_CACHE_DIR", str(args.work / "cache"))
    b = Bundle.open(bundle_path)
    req = PlanRequest(height=args.size, width=args.size, guidance=1.0, installed_only=True)
    untiled = plan(b, "jetson-agx-orin-64gb", req)
    capped = plan(b, str(board_path), req)
    for p in (untiled, capped):
        for c in p.components.values():
            c.threads = args.threads
    cap = args.cap * MB
    runs = {"untiled": (untiled, 0, 0), "capped": (capped, cap, 0), "untiled under the cap": (untiled, cap, 0),
            "untiled, child killed": (untiled, 0, cap)}
    results = {}
    for name, (p, c, kill_at) in runs.items():
        results[name] = {"plan": {"cfg": p.cfg, "tiling": p.to_json()["decode_tiling"],
                                  "resident": {k: v.resident for k, v in p.components.items()}},
                         "estimates": p.estimates,
                         "measured": run_child(bundle_path, p, args.size, c, kill_at=kill_at)}

    print(f"decode of {args.size}x{args.size} px ({args.size // 4}x{args.size // 4} latent cells), "
          f"ONNX Runtime CPU, {args.threads} threads; small cap {args.cap} MB")
    print(f"{'run':24} {'stage':8} {'estimate MB':>12} {'measured MB':>12} {'est/meas':>9}")
    for name, r in results.items():
        m = r["measured"]
        if "killed" in m:
            print(f"{name:24} killed by the parent's watcher, highest RSS seen {m['watched_peak'] / MB:.0f} MB: "
                  f"{m['killed']}")
            continue
        if "stopped" in m:
            print(f"{name:24} stopped by the watcher at {m['rss_when_stopped'] / MB:.0f} MB RSS: {m['stopped']}")
            continue
        for stage in ("denoise", "decode"):
            est, meas = r["estimates"][stage], m["marks"][stage]
            r.setdefault("ratio", {})[stage] = round(est / meas, 3)
            print(f"{name:24} {stage:8} {est / MB:12.0f} {meas / MB:12.0f} {est / meas:9.2f}")
        tiling = r["plan"]["tiling"]
        print(f"{'':24} plan: cfg {r['plan']['cfg']}, tiles {tiling['tile'] if tiling else 'none'}"
              f"{', overlap ' + str(tiling['overlap']) if tiling else ''}; peak "
              f"{max(m['marks']['denoise'], m['marks']['decode']) / MB:.0f} MB")
    RESULTS.parent.mkdir(exist_ok=True)
    record = {"size": args.size, "cap_mb": args.cap, "threads": args.threads, "machine": platform.machine(),
              "cpu_count": os.cpu_count(), "python": platform.python_version(), "runs": results}
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    tmp.replace(RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
