"""Streamed vs resident UNet on a folder with Stable Diffusion 1.5's published dimensions.

1. ``convert``: the folder (denoiser, decoder, text encoder; ONNX fp32) with the denoiser also split
   into stream parts (``edge-sdk convert --stream-parts denoiser``), once, into ``--workdir``.
2. ``run``: ``edge-sdk run`` at 512x512, 2 steps with guidance, seed 0, under ``/usr/bin/time -v``
   (peak RSS of the whole process: its "Maximum resident set size"), once with the denoiser
   resident (the rpi5-8gb plan) and once streamed part by part (``--board rpi4-4gb``, whose plan
   streams the denoiser: nothing else fits its 3072 MB cap). PSNR of the streamed image against
   the resident one (same arithmetic: the target is >= 40 dB) and the time ratio (target <= 3x).

Full-size runs take more than 4 GB: run the script under the shared lock, e.g.
``flock /work/data/bigmem.lock python benchmarks/streaming.py --folder /work/data/sd15-folder
--workdir /work/data/i16b``. Writes benchmarks/results/streaming.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
MB = 2**20


def edge_sdk() -> list[str]:
    return [str(Path(sys.executable).parent / "edge-sdk")]


def convert(folder: Path, bundle: Path) -> dict:
    if (bundle / "manifest.json").is_file():
        return {"reused": True}
    t0 = time.perf_counter()
    cmd = [*edge_sdk(), "convert", str(folder), "-o", str(bundle), "--format", "onnx", "--precision", "fp32",
           "--components", "denoiser,decoder,text_encoder", "--samples", "1", "--stream-parts", "denoiser"]
    r = _timed(cmd)
    if r["rc"] != 0:
        sys.exit(f"convert failed ({r['rc']}):\n{r['stderr'][-3000:]}")
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": r["peak_rss_mb"]}


def _timed(cmd: list[str]) -> dict:
    """Run ``cmd`` under /usr/bin/time -v: rc, wall seconds, peak RSS (MB), stdout, stderr."""
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, cwd=REPO, check=False)
    wall = time.perf_counter() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return {"rc": r.returncode, "seconds": wall, "peak_rss_mb": int(m.group(1)) / 1024 if m else None,
            "stdout": r.stdout, "stderr": r.stderr}


def run(bundle: Path, board: str, out: Path, size: int, steps: int, guidance: float) -> dict:
    cmd = [*edge_sdk(), "run", str(bundle), "--board", board, "--size", f"{size}x{size}", "--steps", str(steps),
           "--guidance", str(guidance), "--seed", "0", "--prompt", "a photograph of a lighthouse at dusk",
           "--out", str(out), "--json"]
    r = _timed(cmd)
    if r["rc"] != 0:
        sys.exit(f"run on {board} failed ({r['rc']}):\n{r['stderr'][-3000:]}")
    report = json.loads(r["stdout"])
    return {"board": board, "seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"],
            "estimate_mb": report.get("plan_estimated_peak_mb"), "plan": report.get("plan"),
            "timings_s": report.get("timings_s"), "image": str(out)}


def psnr(a: Path, b: Path) -> float:
    import numpy as np
    from PIL import Image

    x = np.asarray(Image.open(a), dtype=np.float64)
    y = np.asarray(Image.open(b), dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", type=Path, default=Path("/work/data/sd15-folder"))
    ap.add_argument("--workdir", type=Path, default=Path("/work/data/i16b"))
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--resident-board", default="rpi5-8gb")
    ap.add_argument("--stream-board", default="rpi4-4gb")
    ap.add_argument("--convert-only", action="store_true")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    bundle = args.workdir / "sd15-stream.bundle"
    conv = convert(args.folder, bundle)
    print("convert:", json.dumps(conv), flush=True)
    if args.convert_only:
        return
    resident = run(bundle, args.resident_board, args.workdir / "resident.png", args.size, args.steps, args.guidance)
    print("resident:", json.dumps(resident), flush=True)
    streamed = run(bundle, args.stream_board, args.workdir / "streamed.png", args.size, args.steps, args.guidance)
    print("streamed:", json.dumps(streamed), flush=True)
    result = {
        "folder": str(args.folder), "size": args.size, "steps": args.steps, "guidance": args.guidance,
        "machine": f"{platform.machine()} {os.cpu_count()} cores (shared: timings inflated by contention)",
        "convert": conv, "resident": resident, "streamed": streamed,
        "psnr_db_streamed_vs_resident": psnr(Path(resident["image"]), Path(streamed["image"])),
        "time_ratio": streamed["seconds"] / resident["seconds"],
        "peak_ratio": streamed["peak_rss_mb"] / resident["peak_rss_mb"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "streaming.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("psnr_db_streamed_vs_resident", "time_ratio", "peak_ratio")}))


if __name__ == "__main__":
    main()
