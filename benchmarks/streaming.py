"""Streamed vs resident UNet on a folder with Stable Diffusion 1.5's published dimensions.

1. ``convert``: the folder (denoiser, decoder, text encoder; ONNX fp32) with the denoiser also split
   into stream parts (``edge-sdk convert --stream-parts denoiser``), once, into ``--workdir``.
2. ``run``: what ``edge-sdk run`` does (RUN_CHILD) at 512x512, 2 steps with guidance, seed 0, under ``/usr/bin/time -v``
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
    # The API (the CLI converts every component; the encoder is not needed here), as
    # `edge-sdk convert FOLDER -o BUNDLE --format onnx --samples 1 --stream-parts denoiser` does.
    code = ("import sys; from edge_sdk.converters.convert import convert; "
            "convert(sys.argv[1], sys.argv[2], formats='onnx', precisions='fp32', samples=1, "
            "components=['denoiser', 'decoder', 'text_encoder'], stream=['denoiser'])")
    cmd = [sys.executable, "-c", code, str(folder), str(bundle)]
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


# What `edge-sdk run BUNDLE --board B --size S --steps N --guidance G --seed 0` does, with fixed
# token ids instead of a prompt: the SD 1.5-dimension folders written by convert_full_size.py have
# no tokenizer (nothing is downloaded here). A bundle without a text encoder gets fixed random
# prompt embeddings.
RUN_CHILD = r"""
import json, sys, time
import numpy as np
import edge_sdk
from edge_sdk.pipelines.request import GenerateRequest
bundle, board, size, steps, guidance, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
    float(sys.argv[5]), sys.argv[6]
t0 = time.perf_counter()
gen = edge_sdk.load(bundle, board=board, request=GenerateRequest(height=size, width=size, guidance=guidance))
# Cap watch off (edge-sdk run stops at the cap): the point is to measure the peak against the estimate.
gen.watch = False
from edge_sdk.measure.memory import peak_rss_bytes, reset_peak_rss
stage = {}  # each stage's own peak RSS: the kernel's mark is reset as a stage ends
rng = np.random.default_rng(1)
pipe = gen.pipeline
if getattr(pipe, "text", None) is not None and pipe.text.has_encoder:
    # The text encoder runs as a prompt would run it, under the plan's session handling (the folders
    # written by convert_full_size have no tokenizer: fixed token ids stand for the prompt and the
    # negative prompt).
    specs = gen.bundle.signature("text_encoder")[0]
    ids = rng.integers(0, 49408, (2, pipe.text.sequence_length()), dtype=np.int64)
    feeds = {specs[0].name: ids, **({specs[1].name: np.ones_like(ids)} if len(specs) > 1 else {})}
    emb = pipe.sessions.run("text_encoder", feeds)
    cond, uncond = emb[0:1], emb[1:2]
    stage["text"] = peak_rss_bytes() / 2**20
    reset_peak_rss()
else:
    shape = [d if isinstance(d, int) else 1 for d in gen.bundle.signature("denoiser")[0][2].shape]
    cond, uncond = (rng.standard_normal(shape, dtype=np.float32) for _ in range(2))
def at_step(info):
    if info.index + 1 == info.total:
        stage["denoise"] = peak_rss_bytes() / 2**20
        reset_peak_rss()
r = gen.generate(steps=steps, seed=0, guidance=guidance, height=size, width=size, prompt_embeds=cond,
                 negative_prompt_embeds=uncond, callback=at_step)
stage["decode"] = peak_rss_bytes() / 2**20
gen.close()
r.save(out)
plan = {k: f"{c.runtime}:{c.format}/{c.precision}" + ("+streamed" if c.stream else "")
        for k, c in gen.plan.components.items()}
print(json.dumps({"timings_s": r.timings, "plan": plan, "total_s": time.perf_counter() - t0,
                  "plan_estimated_peak_mb": gen.plan.estimates.get("peak", 0) / 2**20,
                  "stage_estimates_mb": {k: v / 2**20 for k, v in gen.plan.estimates.items()},
                  "stage_peaks_mb": stage, "rung": gen.plan.rung}))
"""


def run(bundle: Path, board: str, out: Path, size: int, steps: int, guidance: float) -> dict:
    cmd = [sys.executable, "-c", RUN_CHILD, str(bundle), board, str(size), str(steps), str(guidance), str(out)]
    r = _timed(cmd)
    if r["rc"] != 0:
        sys.exit(f"run on {board} failed ({r['rc']}):\n{r['stderr'].split(chr(9) + 'Command being timed')[0][-3000:]}")
    report = json.loads(r["stdout"].strip().splitlines()[-1])
    # The child resets the kernel's mark as each stage ends (its per-stage peaks), and the mark
    # /usr/bin/time reads at exit is the reset one: the whole run's peak is the largest of them.
    stages = report.get("stage_peaks_mb") or {}
    return {"board": board, "seconds": r["seconds"], "peak_rss_mb": max([r["peak_rss_mb"], *stages.values()]),
            "estimate_mb": report.get("plan_estimated_peak_mb"), "plan": report.get("plan"),
            "timings_s": report.get("timings_s"), "image": str(out), "rung": report.get("rung"),
            "stage_estimates_mb": report.get("stage_estimates_mb"), "stage_peaks_mb": report.get("stage_peaks_mb")}


def plan_for(bundle: Path, board: str, size: int, guidance: float) -> dict:
    """`edge-sdk plan --json` on ``board``: the denoiser's rung and the estimate, or the refusal."""
    r = subprocess.run([*edge_sdk(), "plan", str(bundle), "--board", board, "--size", f"{size}x{size}",
                        "--guidance", str(guidance), "--json"], capture_output=True, text=True, cwd=REPO, check=False)
    if r.returncode != 0:
        return {"board": board, "refused": " ".join(ln.strip() for ln in r.stderr.strip().splitlines()) or "?"}
    d = json.loads(r.stdout)
    den = d["components"].get("denoiser", {})
    return {"board": board, "estimate_mb": d["estimates_mb"].get("peak"), "cfg": d["cfg"],
            "denoiser": "streamed" if den.get("stream") else "resident" if den.get("resident") else "per call",
            "notes": d.get("notes", [])}


def stream_board(bundle: Path, workdir: Path, size: int, guidance: float) -> Path:
    """A copy of rpi4-4gb's profile with the largest cap whose plan streams the denoiser (found by
    bisection on the planner itself): per-call loading no longer fits, streaming does."""
    import re

    from edge_sdk.bundle import Bundle
    from edge_sdk.errors import PlanError
    from edge_sdk.planning.board import load_board
    from edge_sdk.planning.planner import PlanRequest, plan

    b = Bundle.open(bundle)
    board = load_board("rpi4-4gb")
    req = PlanRequest(height=size, width=size, guidance=guidance, installed_only=True)

    def streams(cap_mb: int) -> bool:
        import dataclasses

        try:
            p = plan(b, dataclasses.replace(board, cap_bytes=cap_mb * MB), req)
        except PlanError:
            return True  # below the streaming rung too: keep going up
        return p.components["denoiser"].stream

    lo, hi = 64, 65536
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if streams(mid) else (lo, mid)
    text = (REPO / "boards" / "rpi4-4gb.toml").read_text()
    out = workdir / "stream-board.toml"
    out.write_text(re.sub(r"(?m)^cap_mb\s*=.*$", f"cap_mb = {lo}", text))
    return out


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
    ap.add_argument("--stream-board", default="rpi4-4gb",
                    help="board NAME or PATH.toml whose plan streams the denoiser; auto: rpi4-4gb's profile "
                         "with the largest cap at which the plan streams")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="< 1: write and use SD 1.5's layout at this width factor instead of --folder")
    ap.add_argument("--convert-only", action="store_true")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    folder = args.folder
    if args.scale != 1.0:  # SD 1.5's blocks and layout at narrower widths (convert_full_size.py)
        sys.path.insert(0, str(Path(__file__).parent))
        from convert_full_size import write_sd15_folder

        folder = args.workdir / f"sd15-scale{args.scale:g}"
        if not (folder / "model_index.json").is_file():
            write_sd15_folder(folder, args.scale)
    bundle = args.workdir / f"sd15-stream{'' if args.scale == 1.0 else f'-scale{args.scale:g}'}.bundle"
    conv = convert(folder, bundle)
    print("convert:", json.dumps(conv), flush=True)
    if args.convert_only:
        return
    if args.stream_board == "auto":
        args.stream_board = str(stream_board(bundle, args.workdir, args.size, args.guidance))
    plans = [plan_for(bundle, b, args.size, args.guidance)
             for b in (args.resident_board, "rpi4-4gb", "rpi-zero-2w", args.stream_board)]
    print("plans:", json.dumps(plans), flush=True)
    resident = run(bundle, args.resident_board, args.workdir / "resident.png", args.size, args.steps, args.guidance)
    print("resident:", json.dumps(resident), flush=True)
    streamed = run(bundle, args.stream_board, args.workdir / "streamed.png", args.size, args.steps, args.guidance)
    print("streamed:", json.dumps(streamed), flush=True)
    result = {
        "folder": str(folder), "scale": args.scale, "size": args.size, "steps": args.steps, "guidance": args.guidance,
        "machine": f"{platform.machine()} {os.cpu_count()} cores (shared: timings inflated by contention)",
        "convert": conv, "plans": plans, "resident": resident, "streamed": streamed,
        "psnr_db_streamed_vs_resident": psnr(Path(resident["image"]), Path(streamed["image"])),
        "time_ratio": streamed["seconds"] / resident["seconds"],
        "peak_ratio": streamed["peak_rss_mb"] / resident["peak_rss_mb"],
    }
    RESULTS.mkdir(exist_ok=True)
    name = "streaming.json" if args.scale == 1.0 else f"streaming_scale{args.scale:g}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("psnr_db_streamed_vs_resident", "time_ratio", "peak_ratio")}))


if __name__ == "__main__":
    main()
