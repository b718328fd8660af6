"""DeepCache (issue 17): full UNet every step vs every N-th step with the shallow path between.

On the SD-shaped diffusers folder (``benchmarks/peers/sd_folder.py``: UNet 64/128/256 with
cross-attention, VAE x8, CLIP text encoder, DDIM), converted once with ``--stream-parts denoiser``
to ONNX and OpenVINO IR fp32, 256x256, 20 steps, guidance 7.5 (CFG batched), 2 threads, seed 0:

- per engine (ONNX Runtime on ONNX; OpenVINO on IR compiled per shape, in f32 and, where the CPU
  has it, bf16 arithmetic for the denoiser), the plain plan (whole UNet, one graph), the stream
  parts chained every step (DeepCache N=1: the chain's own overhead), and DeepCache N=2, 3, 5 on
  both branches (``down0``, ``conv_in``);
- ONNX Runtime with thread spinning on and off for the chained parts;
- seconds per generation (median and minimum of ``--repeats`` after ``--warmup``, in-process; one
  configs timed in groups, each led by the engine's plain plan as its own baseline, all open at once
  and timed in interleaved rounds, so drift hits a baseline and its rivals alike); PSNR of
  the final image against the same engine's plain plan and against diffusers'
  StableDiffusionPipeline in PyTorch fp32 from the same initial latents (edge-sdk's seeded noise).

Writes benchmarks/results/deep_cache.json and the "DeepCache (issue 17)" section of
benchmarks/RESULTS.md. Usage: ``python benchmarks/deep_cache.py --workdir /work/data/dc/sd``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.measure.doctor import cpu_info

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SECTION = "## DeepCache (issue 17)"


def prepare(work: Path) -> Path:
    """The folder and its bundle (reused when present)."""
    sys.path.insert(0, str(HERE / "peers"))
    from sd_folder import write_sd_shaped_folder

    import edge_sdk

    work.mkdir(parents=True, exist_ok=True)
    folder = write_sd_shaped_folder(work / "folder")
    bundle = work / "edge-sdk.bundle"
    if not (bundle / "manifest.json").is_file():
        # = edge-sdk convert FOLDER -o BUNDLE --format onnx,openvino --stream-parts denoiser --samples 1
        edge_sdk.convert(folder, bundle, formats=["onnx", "openvino"], precisions=["fp32"],
                         components=["text_encoder", "denoiser", "decoder"], stream=["denoiser"], samples=1)
    return bundle


def to_unit(raw: np.ndarray) -> np.ndarray:
    return np.clip((raw[0].transpose(1, 2, 0) + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)


def psnr(ref: np.ndarray, img: np.ndarray) -> float:
    mse = float(np.mean((ref.astype(np.float64) - img) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def torch_reference(folder: Path, a: argparse.Namespace, latents: np.ndarray) -> tuple[np.ndarray, float]:
    """diffusers in PyTorch fp32 from the same initial latents; the image in [0, 1] and its seconds."""
    import torch
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(a.threads)
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = pipe(a.prompt, num_inference_steps=a.steps, guidance_scale=a.guidance, height=a.size, width=a.size,
                   latents=torch.from_numpy(latents), output_type="np")
    return np.asarray(out.images[0], dtype=np.float32), time.perf_counter() - t0


def engines(bundle, threads: int) -> dict[str, Any]:
    """name -> plain plan, as `edge-sdk tune` builds its candidates (speed options, bf16 where the CPU has it)."""
    from edge_sdk.planning.plan import default_plan
    from edge_sdk.runtimes.openvino import cpu_inference_precisions

    out = {}
    ov = default_plan(bundle, runtime="openvino", format="openvino", device="cpu", threads=threads)
    static = {k: replace(c, options={**c.options, "static_shapes": "per_shape"}) for k, c in ov.components.items()}
    if "bf16" in cpu_inference_precisions():  # first: the fastest engine here, where it matters most
        den = static["denoiser"]
        out["openvino-bf16"] = replace(ov, components={**static, "denoiser": replace(
            den, options={**den.options, "inference_precision": "bf16"})})
    out["onnxruntime"] = default_plan(bundle, runtime="onnxruntime", format="onnx", device="cpu", threads=threads)
    out["openvino-f32"] = replace(ov, components=static)
    return out


def with_cache(plan, n: int, branch: str, **options: Any):
    cp = plan.components["denoiser"]
    cp = replace(cp, deep_cache=n, deep_cache_branch=branch, options={**cp.options, **options})
    return replace(plan, components={**plan.components, "denoiser": cp})


def rss_mb() -> float:
    """This process's resident set now (VmRSS), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def time_engine(bundle, group: list[tuple[str, str, int, str, Any]], a: argparse.Namespace) -> list[dict[str, Any]]:
    """A group of configs, all open at once, timed in interleaved rounds (a busy machine's drift
    then falls on every config alike): ``warmup`` generations each, then ``repeats`` rounds of one
    generation per config. Median and minimum seconds per config."""
    from edge_sdk.api import Generator

    kw = dict(prompt=a.prompt, steps=a.steps, seed=a.seed, guidance=a.guidance, height=a.size, width=a.size)
    gens = [Generator(bundle, plan, watch=False) for *_, plan in group]
    try:
        first = []
        for g in gens:
            t0 = time.perf_counter()
            for _ in range(a.warmup):
                g.generate(**kw)
            first.append(time.perf_counter() - t0)
        secs: list[list[float]] = [[] for _ in gens]
        last: list[Any] = [None] * len(gens)
        for _ in range(a.repeats):
            for i, g in enumerate(gens):
                t0 = time.perf_counter()
                last[i] = g.generate(**kw)
                secs[i].append(time.perf_counter() - t0)
        rss = rss_mb()
    finally:
        for g in gens:
            g.close()
    return [{"rss_mb": rss, "seconds": statistics.median(s), "seconds_min": min(s),
             "seconds_all": [round(x, 4) for x in s],
             "warmup_seconds": round(f, 3), "image": to_unit(r.raw), "deep_cache": r.info.get("deep_cache"),
             "denoise_seconds": r.timings.get("denoise")} for s, f, r in zip(secs, first, last, strict=True)]


def groups(plans: dict[str, Any], a: argparse.Namespace) -> list[list[tuple[str, str, int, str, Any]]]:
    """Configs (engine, label, N, branch, plan) in groups timed together, each led by the engine's
    plain plan (its own baseline): few generators open at once (each holds its sessions' arenas,
    ~1 GB at this size on ONNX Runtime) while drift still falls on a baseline and its rivals alike.
    ONNX Runtime's DeepCache parts run with thread spinning off (DeepCacheSession's default), so
    its DeepCache groups are led by the plain plan with spinning off too (spinning alone changed the
    plain plan's time 1.6x on the busy machine); its first group shows spinning on and off for the
    plain plan and the chain."""
    out = []
    for eng, plan in plans.items():
        plain = (eng, "plain", 0, "", plan)
        first = [plain, (eng, "chain (N=1)", 1, "down0", with_cache(plan, 1, "down0"))]
        if eng == "onnxruntime":
            first = [plain, (eng, "plain spin off", 0, "", with_options(plan, allow_spinning=False)),
                     (eng, "chain (N=1) spin off", 1, "down0", with_cache(plan, 1, "down0")),
                     (eng, "chain (N=1) spin on", 1, "down0", with_cache(plan, 1, "down0", allow_spinning=True))]
            plain = (eng, "plain spin off", 0, "", with_options(plan, allow_spinning=False))
        out.append(first)
        for n in a.intervals:
            out.append([plain] + [(eng, f"N={n} {br}", n, br, with_cache(plan, n, br)) for br in ("down0", "conv_in")])
    return out


def with_options(plan, **options: Any):
    return replace(plan, components={k: replace(c, options={**c.options, **options})
                                     for k, c in plan.components.items()})


def markdown(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    lines = [SECTION, "",
             f"SD-shaped folder (benchmarks/peers/sd_folder.py), {s['size']}x{s['size']}, {s['steps']} steps DDIM, "
             f"guidance {s['guidance']} (CFG batched), {s['threads']} threads, seed {s['seed']}; median of "
             f"{s['repeats']} after {s['warmup']} warm-up, in-process; configs timed in groups of 3 open together, "
             "each led by the engine's plain plan (its baseline: speed-ups and 'PSNR vs plain' are against the "
             f"group's own), in interleaved rounds; load average "
             f"{doc['loadavg_before']} before, {doc['loadavg_after']} after; {doc['machine']['cpu']}. "
             "`benchmarks/deep_cache.py`, `benchmarks/results/deep_cache.json`. PSNR on the final 8-bit-range "
             "image in [0, 1]; vs PyTorch: diffusers StableDiffusionPipeline fp32 from the same initial latents "
             f"({doc['torch']['seconds']:.2f} s for one generation here).", "",
             "| engine | run | s / image (median, min) | speed-up vs plain (median, min) | PSNR vs plain (dB) | "
             "PSNR vs PyTorch fp32 (dB) |",
             "|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['engine']} | {r['label']} | {r['seconds']:.3f}, {r['seconds_min']:.3f} | "
                     f"x{r['speedup']:.2f}, x{r['speedup_min']:.2f} | {_db(r['psnr_vs_plain'])} | "
                     f"{_db(r['psnr_vs_torch'])} |")
    lines += ["", doc.get("summary", ""), ""]
    return "\n".join(lines)


def _db(v: float | None) -> str:
    return "-" if v is None else ("exact" if v == float("inf") else f"{v:.1f}")


def write_section(text: str) -> None:
    path = HERE / "RESULTS.md"
    old = path.read_text()
    if SECTION in old:
        head, rest = old.split(SECTION, 1)
        nxt = rest.find("\n## ")
        old = head + (rest[nxt + 1:] if nxt >= 0 else "")
        new = old.rstrip("\n") + "\n\n" + text
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/work/data/dc/sd"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--intervals", type=lambda s: [int(x) for x in s.split(",")], default=[2, 3, 5])
    ap.add_argument("--engines", help="comma-separated subset of onnxruntime,openvino-f32,openvino-bf16")
    ap.add_argument("--prompt", default="a photograph of an astronaut riding a horse")
    ap.add_argument("--no-markdown", action="store_true")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of engines not run now from the existing results/deep_cache.json")
    a = ap.parse_args()

    from edge_sdk.bundle import Bundle
    from edge_sdk.pipelines.seeds import RowNoise

    bundle = Bundle.open(prepare(a.workdir))
    cells = a.size // 8
    latents = RowNoise(a.seed, 1).draw((4, cells, cells))  # DDIM's init sigma is 1: these are the latents
    torch_img, torch_s = torch_reference(a.workdir / "folder", a, latents)
    plans = engines(bundle, a.threads)
    if a.engines:
        plans = {k: v for k, v in plans.items() if k in a.engines.split(",")}
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    if a.merge and (RESULTS / "deep_cache.json").is_file():
        kept = [r for r in json.loads((RESULTS / "deep_cache.json").read_text())["rows"] if r["engine"] not in plans]
    for group in groups(plans, a):
        timed = time_engine(bundle, group, a)
        base = timed[0]  # the group's plain plan
        for k, ((eng, label, n, branch, _plan), r) in enumerate(zip(group, timed, strict=True)):
            row = {"engine": eng, "label": label if k else f"{label} (group baseline)", "interval": n, "branch": branch,
                   "seconds": round(r["seconds"], 4), "seconds_min": round(r["seconds_min"], 4),
                   "seconds_all": r["seconds_all"], "warmup_seconds": r["warmup_seconds"],
                   "denoise_seconds": r["denoise_seconds"], "speedup": round(base["seconds"] / r["seconds"], 3),
                   "speedup_min": round(base["seconds_min"] / r["seconds_min"], 3),
                   "psnr_vs_plain": round(psnr(base["image"], r["image"]), 2),
                   "psnr_vs_torch": round(psnr(torch_img, r["image"]), 2), "deep_cache": r["deep_cache"],
                   "loadavg": round(os.getloadavg()[0], 2), "group_rss_mb": r["rss_mb"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
        write(a, doc_of(a, load_before, torch_s, kept + rows), markdown_too=not a.no_markdown)  # after every group


def doc_of(a: argparse.Namespace, load_before: tuple[float, ...], torch_s: float,
           rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"settings": {k: v for k, v in vars(a).items() if k not in ("workdir", "no_markdown", "merge", "engines")},
            "machine": {"cpu": cpu_info()["model"], "python": platform.python_version(), "cores": os.cpu_count()},
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "torch": {"seconds": round(torch_s, 3)}, "rows": rows,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write(a: argparse.Namespace, doc: dict[str, Any], *, markdown_too: bool) -> None:
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "deep_cache.json"
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"wrote {out}", flush=True)
    if markdown_too:
        write_section(markdown(doc))


if __name__ == "__main__":
    main()
