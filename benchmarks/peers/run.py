"""edge-sdk against the tools that already run Stable Diffusion without PyTorch, side by side, one command.

    python benchmarks/peers/run.py            # full: 2 rounds x (warm-up + 3 timed) per pipeline
    python benchmarks/peers/run.py --quick    # 1 round x (warm-up + 1 timed), no tune
    python benchmarks/peers/run.py --model sd15   # SD 1.5's published dims, 512x512 / 4 steps

What it does, in order (each step is skipped when its output is already there):

1. creates the peers' own virtual environment (``--venv``, default /work/data/i17a/peers-venv or
   $EDGE_SDK_PEERS_VENV) with openvino-genai, optimum-intel, optimum-onnx, onnxruntime, diffusers
   and torch (CPU), so none of them touches edge-sdk's environment;
2. writes the model folder: ``sd`` = the SD-shaped test folder (``sd_folder.py``; 256x256, 20 steps),
   ``sd15`` = a view of a folder with SD 1.5's published dimensions (``--sd15-folder``; 512x512,
   4 steps) with a tokenizer and DDIM added beside links to its weights;
3. exports it with each tool's own exporter (``optimum-cli export openvino`` / ``export onnx``) and
   ``edge-sdk convert`` (ONNX + OpenVINO IR, fp32), and tunes edge-sdk (``edge-sdk tune``);
4. draws the initial latents once (edge-sdk's seeded noise for ``--seed``) and runs every pipeline
   in its own process (``child.py``): load, one warm-up generation, ``--repeats`` timed ones, peak
   RSS; ``--rounds`` times over, the pipelines' order rotated each round;
5. scores each image against diffusers' PyTorch fp32 image from the same latents (PSNR, dB), and
   writes ``benchmarks/results/peers[-sd15].json``, a chart ``benchmarks/results/peers[-sd15].png``
   and the table in ``benchmarks/RESULTS.md`` (between the ``peers:`` markers).

Sittings of a few rows: ``--only`` (names or substrings, ';'-separated when names have commas),
``--reuse-reference`` (the PyTorch image of an earlier sitting with the same arguments, not run
again), ``--reference-once``, ``--tune-runtimes openvino``; ``--lock FILE`` flocks each pipeline
process (sd15 on a shared machine). A ``.partial.json`` beside the output is rewritten after
every pipeline, so a sitting cut short keeps what it measured.

Same folder, steps, size, guidance, prompt, threads (``--threads``, 2: every OpenVINO
``INFERENCE_NUM_THREADS``, ONNX Runtime ``intra_op_num_threads``, ``torch.set_num_threads``).
Models larger than 4 GB of RSS (sd15) should run under ``flock /work/data/bigmem.lock`` on the
shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
RESULTS_MD = BENCH / "RESULTS.md"
DEFAULT_VENV = os.environ.get("EDGE_SDK_PEERS_VENV", "/work/data/i17a/peers-venv")
DEFAULT_WORK = os.environ.get("EDGE_SDK_PEERS_WORK", "/work/data/i17a/peers")
PEER_PACKAGES = ["torch==2.13.0", "openvino-genai", "optimum-intel", "optimum-onnx", "onnxruntime", "diffusers"]
OPTIONAL_PACKAGES = ["stable-diffusion-cpp-python"]
# deep_cache: the DeepCache intervals shown as rows of their own (the tuned row may pick any of
# edge-sdk tune's). At 4 steps N=3 runs as many full steps as N=2 (steps 0 and 3), so sd15 shows 4.
SIZES = {"sd": {"size": 256, "steps": 20, "deep_cache": (2, 3), "tune_deep_cache": (2, 3, 5)},
         "sd15": {"size": 512, "steps": 4, "deep_cache": (2, 4), "tune_deep_cache": (2, 4)}}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(cmd: list[str], *, cwd: Path | None = None, timeout: float = 3600) -> float:
    """Run ``cmd``; its output goes to the log. Seconds taken; a failure stops the run with its output."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-25:])
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{tail}")
    return time.perf_counter() - t0


# -- 1. the peers' environment --------------------------------------------------------------------
def ensure_venv(venv: Path, *, optional: bool) -> dict[str, Any]:
    py = venv / "bin" / "python"
    marker = venv / ".peers-installed"
    if not marker.is_file():
        if not py.exists():
            log(f"creating the peers' virtual environment {venv}")
            sh([sys.executable, "-m", "venv", str(venv)])
        log(f"installing {' '.join(PEER_PACKAGES)} (minutes)")
        sh([str(py), "-m", "pip", "install", "-q", *PEER_PACKAGES], timeout=7200)
        marker.write_text(json.dumps(PEER_PACKAGES))
    extra: dict[str, str] = {}
    if optional:
        for pkg in OPTIONAL_PACKAGES:
            try:
                sh([str(py), "-m", "pip", "install", "-q", pkg], timeout=3600)
                extra[pkg] = "installed"
            except SystemExit as e:  # a source build that fails here is reported, not fatal
                extra[pkg] = f"did not install: {str(e).splitlines()[-1][:200]}"
    out = subprocess.run([str(py), "-c", "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) "
                          "for p in ['openvino', 'openvino-genai', 'optimum', 'optimum-intel', 'optimum-onnx', "
                          "'onnxruntime', 'diffusers', 'transformers', 'torch']}))"],
                         capture_output=True, text=True, check=True)
    return {"python": str(py), "versions": json.loads(out.stdout), "optional": extra}


# -- 2. the model folder --------------------------------------------------------------------------
def sd15_view(src: Path, dst: Path) -> Path:
    """SD 1.5's published dims from ``src`` (read only: its weights are linked, never written), with
    a CLIP-format tokenizer and SD's DDIM config beside them (``src`` has neither)."""
    if (dst / "model_index.json").is_file():
        return dst
    from diffusers import DDIMScheduler
    from sd_folder import DDIM, legacy_text_encoder_keys, write_tokenizer
    from transformers import CLIPTokenizer

    if not (src / "model_index.json").is_file():
        raise SystemExit(f"{src}: no model_index.json (is the folder written yet?)")
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for part in ("unet", "vae"):
        (tmp / part).symlink_to((src / part).resolve(), target_is_directory=True)
    # The text encoder as a copy with the hub's key names: a folder written by transformers 5 lacks
    # the 'text_model.' prefix, and the peers' transformers 4 would initialize it randomly (a
    # warning only), so every peer and the PyTorch reference would encode the prompt differently.
    (tmp / "text_encoder").mkdir()
    for f in (src / "text_encoder").iterdir():
        shutil.copyfile(f, tmp / "text_encoder" / f.name)
    legacy_text_encoder_keys(tmp / "text_encoder" / "model.safetensors")
    write_tokenizer(tmp / "tok-src")
    CLIPTokenizer(vocab=str(tmp / "tok-src" / "vocab.json"), merges=str(tmp / "tok-src" / "merges.txt"),
                  model_max_length=77).save_pretrained(str(tmp / "tokenizer"))
    shutil.rmtree(tmp / "tok-src")
    write_tokenizer(tmp / "tokenizer")  # vocab.json + merges.txt too, for transformers 4's CLIPTokenizer
    DDIMScheduler(**DDIM).save_pretrained(str(tmp / "scheduler"))
    index = json.loads((src / "model_index.json").read_text())
    index.update(tokenizer=["transformers", "CLIPTokenizer"], scheduler=["diffusers", "DDIMScheduler"],
                 safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    tmp.rename(dst)
    return dst


# -- 3. exports ------------------------------------------------------------------------------------
def exports(folder: Path, work: Path, venv: dict[str, Any], *, tune: bool, steps: int, size: int,
            threads: int, tune_runtimes: str | None = None, tune_precisions: str | None = None,
            tune_repeats: int = 2, deep_cache: tuple[int, ...] = ()) -> dict[str, Any]:
    bindir = Path(venv["python"]).parent
    done: dict[str, Any] = {}
    for name, fmt in (("ov", "openvino"), ("onnx", "onnx")):
        out = work / f"optimum-{name}"
        cmd = [str(bindir / "optimum-cli"), "export", fmt, "--model", str(folder), "--task", "text-to-image", str(out)]
        if not (out / "model_index.json").is_file():
            log(f"exporting with {' '.join(cmd[:3])}")
            shutil.rmtree(out, ignore_errors=True)
            done[name] = {"seconds": sh(cmd)}
        done.setdefault(name, {})["command"] = " ".join(cmd)
    bundle = work / "edge-sdk.bundle"
    # edge-sdk convert, less the VAE encoder (img2img only: the peers' text-to-image does not use it).
    # fp16 too: OpenVINO's bf16 plan on fp16 weights holds half the source weights (RESULTS.md).
    # The denoiser's stream parts too: DeepCache runs on them (edge_sdk.pipelines.deep_cache).
    call = (f"import edge_sdk; edge_sdk.convert({str(folder)!r}, {str(bundle)!r}, formats=['onnx', 'openvino'], "
            "precisions=['fp32', 'fp16'], components=['text_encoder', 'denoiser', 'decoder'], stream=['denoiser'], "
            "samples=1)")
    manifest = bundle / "manifest.json"
    if manifest.is_file() and not ((bundle / "denoiser" / "openvino" / "fp16").is_dir()
                                   and json.loads(manifest.read_text())["components"]["denoiser"].get("stream")):
        log(f"{bundle} has no fp16 OpenVINO artifacts or no stream parts (an older harness wrote it): converting again")
        shutil.rmtree(bundle)
        bundle.with_name(bundle.name + ".peers-tuned.json").unlink(missing_ok=True)
    if not (bundle / "manifest.json").is_file():
        log("converting with edge_sdk.convert")
        done["edge-sdk"] = {"seconds": sh([sys.executable, "-c", call])}
    done.setdefault("edge-sdk", {})["command"] = call
    tuned = bundle.with_name(bundle.name + ".peers-tuned.json")
    if tune and not tuned.is_file():
        cmd = [sys.executable, "-m", "edge_sdk.cli.main", "tune", str(bundle), "--board", "x86-64-generic", "--steps",
               str(steps), "--size", f"{size}x{size}", "--threads", str(threads), "--repeats", str(tune_repeats),
               "--dry-run", "--json", "-q"] + (["--runtimes", tune_runtimes] if tune_runtimes else []) + (
               ["--precisions", tune_precisions] if tune_precisions else []) + (
               ["--deep-cache", ",".join(map(str, deep_cache))] if deep_cache else [])
        log("tuning edge-sdk (edge-sdk tune)")
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
        if r.returncode != 0:
            raise SystemExit(f"edge-sdk tune failed: {r.stderr.strip()[-2000:]}")
        tuned.write_text(r.stdout)
    if tuned.is_file():
        done["tune"] = json.loads(tuned.read_text())
    return {"bundle": str(bundle), "tuned": str(tuned) if tuned.is_file() else None, **done}


def _variant(plan: dict[str, Any], *, skip: tuple[str, ...] = (), precision: str | None = None,
             **options: Any) -> dict[str, Any]:
    """A copy of ``plan`` (as JSON) with ``options`` (and the weights' ``precision``) set on every
    component but those in ``skip``."""
    out = json.loads(json.dumps(plan))
    for name, cp in out["components"].items():
        if name not in skip:
            cp["options"].update(options)
            if precision:
                cp["precision"] = precision
    return out


def edge_plans(bundle_path: Path, tuned: str | None, threads: int, work: Path,
               deep_cache: tuple[int, ...] = ()) -> dict[str, Path]:
    """Plan files: ONNX Runtime fp32, OpenVINO f32 and bf16 (inference precision), and the tuned plan."""
    from edge_sdk.bundle import Bundle
    from edge_sdk.planning.plan import Plan, default_plan

    bundle = Bundle.open(bundle_path)
    plans: dict[str, dict[str, Any]] = {
        "ort": default_plan(bundle, runtime="onnxruntime", format="onnx", precision="fp32", threads=threads).to_json(),
        "ov-f32": default_plan(bundle, runtime="openvino", format="openvino", precision="fp32",
                               threads=threads).to_json()}
    # CLIP's mask overflows bf16 (NaN: edge_sdk.measure.tune.REDUCED_COMPONENTS), so the text
    # encoder keeps f32 arithmetic, and fp32 weights where the others' arithmetic is bf16 anyway.
    not_text = ("text_encoder",)
    plans["ov-f32-static"] = _variant(plans["ov-f32"], static_shapes="per_shape")  # the fp32-quality plan tune builds
    plans["ov-bf16"] = _variant(plans["ov-f32"], skip=not_text, inference_precision="bf16")
    plans["ov-bf16-static"] = static = _variant(plans["ov-bf16"], static_shapes="per_shape")
    if any(a.format == "openvino" and a.precision == "fp16" for a in bundle.artifacts("denoiser")):
        plans["ov-bf16-static-fp16w"] = _variant(static, skip=not_text, precision="fp16")
    # Without OpenVINO's compiled-model cache, as GenAI runs by default: on a cache hit the plugin
    # imports the blob while the model as read is still held (a transient at load, RESULTS.md).
    for key in ("ov-bf16-static", "ov-bf16-static-fp16w"):
        if key in plans:
            plans[key + "-nocache"] = _variant(plans[key], cache_dir=False)
    # DeepCache (issue 17's "fewer steps" feature), conv_in branch (the faster one, RESULTS.md
    # "DeepCache"): a full UNet run every N steps, the shallow path between. On the bf16 per-shape
    # plan (fp32 weights: its parts' peak RSS measured 30 MB under the same on fp16 weights), and
    # at the first interval on the ONNX Runtime plan too.
    from edge_sdk.pipelines.deep_cache import with_deep_cache

    if bundle.stream_parts("denoiser", "openvino", "fp32"):
        for n in deep_cache:
            plans[f"ov-bf16-static-dc{n}"] = with_deep_cache(bundle, Plan.from_json(static), n, "conv_in").to_json()
    if deep_cache and bundle.stream_parts("denoiser", "onnx", "fp32"):
        n = deep_cache[0]
        plans[f"ort-dc{n}"] = with_deep_cache(bundle, Plan.from_json(plans["ort"]), n, "conv_in").to_json()
    if tuned:
        t = json.loads(Path(tuned).read_text())
        plans["tuned"] = next(c["plan"] for c in t["candidates"] if c["label"] == t["chosen"])
        not_ov = tuple(n for n, cp in plans["tuned"]["components"].items() if cp["runtime"] != "openvino")
        if len(not_ov) < len(plans["tuned"]["components"]):  # as GenAI runs: no compiled-model cache
            plans["tuned-nocache"] = _variant(plans["tuned"], skip=not_ov, cache_dir=False)
    out = {}
    for k, p in plans.items():
        out[k] = work / f"plan-{k}.json"
        out[k].write_text(json.dumps(p, indent=1))
    return out


# -- 4. the pipelines ------------------------------------------------------------------------------
def pipelines(work: Path, venv: dict[str, Any], plans: dict[str, Path]) -> list[dict[str, Any]]:
    peer, edge = venv["python"], sys.executable
    bundle = str(work / "edge-sdk.bundle")
    rows = [
        dict(name="diffusers StableDiffusionPipeline", engine="PyTorch", python=peer, kind="diffusers",
             model=str(work / "folder"), precision="fp32", reference=True),
        dict(name="OpenVINO GenAI Text2ImagePipeline", engine="OpenVINO", python=peer, kind="ov-genai",
             model=str(work / "optimum-ov"), precision="default"),
        dict(name="OpenVINO GenAI Text2ImagePipeline f32", engine="OpenVINO", python=peer, kind="ov-genai",
             model=str(work / "optimum-ov"), precision="f32"),
        dict(name="optimum-intel OVStableDiffusionPipeline", engine="OpenVINO", python=peer, kind="optimum-intel",
             model=str(work / "optimum-ov"), precision="default"),
        dict(name="optimum-intel OVStableDiffusionPipeline f32", engine="OpenVINO", python=peer,
             kind="optimum-intel", model=str(work / "optimum-ov"), precision="f32"),
        dict(name="optimum-onnx ORTStableDiffusionPipeline", engine="ONNX Runtime", python=peer,
             kind="optimum-onnx", model=str(work / "optimum-onnx"), precision="fp32"),
        *([dict(name="stable-diffusion.cpp (Python binding)", engine="ggml", python=peer, kind="sd-cpp",
                model=str(work / "folder"), precision="default")]
          if venv.get("optional", {}).get("stable-diffusion-cpp-python") == "installed" else []),
        dict(name="edge-sdk, ONNX Runtime fp32 plan", engine="ONNX Runtime", python=edge, kind="edge-sdk",
             model=bundle, plan=str(plans["ort"]), precision="fp32"),
        dict(name="edge-sdk, OpenVINO f32 plan", engine="OpenVINO", python=edge, kind="edge-sdk", model=bundle,
             plan=str(plans["ov-f32"]), precision="f32"),
        dict(name="edge-sdk, OpenVINO f32 plan, compiled per shape", engine="OpenVINO", python=edge, kind="edge-sdk",
             model=bundle, plan=str(plans["ov-f32-static"]), precision="f32"),
        dict(name="edge-sdk, OpenVINO bf16 plan", engine="OpenVINO", python=edge, kind="edge-sdk", model=bundle,
             plan=str(plans["ov-bf16"]), precision="bf16"),
    ]
    rows.append(dict(name="edge-sdk, OpenVINO bf16 plan, compiled per shape", engine="OpenVINO", python=edge,
                     kind="edge-sdk", model=bundle, plan=str(plans["ov-bf16-static"]), precision="bf16"))
    if "ov-bf16-static-fp16w" in plans:
        rows.append(dict(name="edge-sdk, OpenVINO bf16 plan on fp16 weights, compiled per shape", engine="OpenVINO",
                         python=edge, kind="edge-sdk", model=bundle, plan=str(plans["ov-bf16-static-fp16w"]),
                         precision="bf16"))
    for key, what in (("ov-bf16-static-nocache", "compiled per shape"),
                      ("ov-bf16-static-fp16w-nocache", "on fp16 weights, compiled per shape")):
        if key in plans:
            rows.append(dict(name=f"edge-sdk, OpenVINO bf16 plan {what}, no compiled-model cache", engine="OpenVINO",
                             python=edge, kind="edge-sdk", model=bundle, plan=str(plans[key]), precision="bf16"))
    for key in sorted((k for k in plans if "-dc" in k), key=lambda k: (k.startswith("ort"), len(k), k)):
        base, n = key.rsplit("-dc", 1)
        what = ("ONNX Runtime fp32 plan" if base == "ort" else "OpenVINO bf16 plan, compiled per shape")
        rows.append(dict(name=f"edge-sdk, {what}, DeepCache N={n} (conv_in)",
                         engine="ONNX Runtime" if base == "ort" else "OpenVINO", python=edge, kind="edge-sdk",
                         model=bundle, plan=str(plans[key]), precision="fp32" if base == "ort" else "bf16"))
    if "tuned" in plans:
        rows.append(dict(name="edge-sdk, tuned plan (edge-sdk tune)", engine="tuned", python=edge, kind="edge-sdk",
                         model=bundle, plan=str(plans["tuned"]), precision="tuned"))
    if "tuned-nocache" in plans:
        rows.append(dict(name="edge-sdk, tuned plan, no compiled-model cache", engine="tuned", python=edge,
                         kind="edge-sdk", model=bundle, plan=str(plans["tuned-nocache"]), precision="tuned"))
    return rows


def run_child(p: dict[str, Any], a: argparse.Namespace, latents: Path, image: Path) -> dict[str, Any]:
    cmd = [p["python"], str(HERE / "child.py"), "--kind", p["kind"], "--model", p["model"], "--latents", str(latents),
           "--image", str(image), "--steps", str(a.steps), "--size", str(a.size), "--guidance", str(a.guidance),
           "--threads", str(a.threads), "--seed", str(a.seed), "--repeats", str(a.repeats), "--prompt", a.prompt]
    if p.get("plan"):
        cmd += ["--plan", p["plan"]]
    if p["kind"] in ("ov-genai", "optimum-intel") and p["precision"] != "default":
        cmd += ["--precision", p["precision"]]
    if a.lock:  # big models: one pipeline at a time holds the shared machine's big-memory lock
        cmd = ["flock", str(a.lock), *cmd]
    env = dict(os.environ, PYTHONPATH=str(BENCH.parent), TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(a.threads))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout, env=env)
    if r.returncode != 0:
        err = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        return {"error": (err[-1] if err else f"exit {r.returncode}")[:500]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def psnr(ref: np.ndarray, img: np.ndarray) -> float:
    mse = float(np.mean((np.clip(ref, 0, 1).astype(np.float64) - np.clip(img, 0, 1).astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))


def summarize(rows: list[dict[str, Any]], runs: list[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for p in rows:
        rs = [r[p["name"]] for r in runs if p["name"] in r]
        ok = [r for r in rs if "error" not in r]
        secs = [s for r in ok for s in r["seconds"]]
        s: dict[str, Any] = {k: p[k] for k in ("name", "engine", "kind", "precision")}
        if not ok:
            s["error"] = rs[0].get("error") if rs else (
                "not timed in this sitting (its image from an earlier one)" if p.get("reference") else "not run")
        else:
            s.update(median_s=statistics.median(secs), min_s=min(secs), max_s=max(secs),
                     round_medians_s=[statistics.median(r["seconds"]) for r in ok],
                     cpu_median_s=statistics.median([c for r in ok for c in r["cpu_seconds"]]),
                     peak_rss_mb=max(r["peak_rss_mb"] for r in ok), load_s=statistics.median(r["load_s"] for r in ok),
                     psnr_db=ok[-1].get("psnr_db"), latents_used=all(r["latents_used"] for r in ok), runs=len(secs))
        out.append(s)
    return out


# -- 5. the report ---------------------------------------------------------------------------------
def chart(summary: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [s for s in summary if "median_s" in s][::-1]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.4))
    colors = ["tab:green" if s["kind"] == "edge-sdk" else "tab:gray" for s in rows]
    med = [s["median_s"] for s in rows]
    err = [[s["median_s"] - s["min_s"] for s in rows], [s["max_s"] - s["median_s"] for s in rows]]
    ax.barh(range(len(rows)), med, xerr=err, color=colors, capsize=3)
    ax.set_yticks(range(len(rows)),
                  [f"{s['name']}  ({'inf' if s['psnr_db'] == float('inf') else format(s['psnr_db'] or 0, '.1f')} dB)"
                   for s in rows], fontsize=8)
    ax.set_xlabel("seconds per generation (median, bars: min-max)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(summary: list[dict[str, Any]]) -> str:
    lines = ["| pipeline | engine | median s | min-max s | per round | peak RSS MB | PSNR vs PyTorch fp32 |",
             "|---|---|---|---|---|---|---|"]
    for s in sorted(summary, key=lambda s: s.get("median_s", float("inf"))):
        if "median_s" not in s:
            lines.append(f"| {s['name']} | {s['engine']} | failed: {s['error'][:120]} | | | | |")
            continue
        q = s["psnr_db"]
        q = ("reference" if s["kind"] == "diffusers" else "n/a" if q is None
             else "inf" if q == float("inf") else f"{q:.1f} dB")
        if not s["latents_used"]:
            q += " (own noise)"
        name = f"**{s['name']}**" if s["kind"] == "edge-sdk" else s["name"]
        lines.append(f"| {name} | {s['engine']} | {s['median_s']:.3f} | {s['min_s']:.3f}-{s['max_s']:.3f} | "
                     f"{' / '.join(f'{x:.3f}' for x in s['round_medians_s'])} | {s['peak_rss_mb']:.0f} | {q} |")
    return "\n".join(lines)


def write_markdown(results: dict[str, Any], key: str, png: Path) -> None:
    a = results["args"]
    begin, end = f"<!-- peers:{key}:begin -->", f"<!-- peers:{key}:end -->"
    load = results.get("load_average")
    body = "\n".join([
        begin,
        f"Written by `benchmarks/peers/run.py{' --quick' if a['quick'] else ''}"
        f"{' --model sd15' if key == 'sd15' else ''}` at {results['started']} "
        f"(`results/{Path(a['out']).name}`). Model `{key}`, {a['size']}x{a['size']}, {a['steps']} steps, "
        f"guidance {a['guidance']}, {a['threads']} threads, {a['rounds']} round(s) x (warm-up + {a['repeats']}) "
        f"in-process generations, each pipeline in its own process; load average {load} at the start "
        "(the machine is shared: compare ratios within one table, not seconds across tables).",
        "",
        table(results["summary"]),
        "",
        f"![peers chart](results/{png.name})",
        end])
    text = RESULTS_MD.read_text()
    if begin in text and end in text:
        text = text[:text.index(begin)] + body + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + f"\n\n## Side by side with the peers ({key})\n\n{body}\n"
    RESULTS_MD.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(SIZES), default="sd")
    ap.add_argument("--quick", action="store_true", help="1 round, 1 timed generation each, no tune")
    ap.add_argument("--venv", type=Path, default=Path(DEFAULT_VENV), help="the peers' virtual environment")
    ap.add_argument("--work", type=Path, default=Path(DEFAULT_WORK), help="folder, exports and images go here")
    ap.add_argument("--sd15-folder", type=Path, default=Path("/work/data/sd15-folder"))
    ap.add_argument("--steps", type=int)
    ap.add_argument("--size", type=int)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--prompt", default="a photograph of an astronaut riding a horse")
    ap.add_argument("--only", help="comma- (or semicolon-) separated substrings or full names of pipelines to run")
    ap.add_argument("--no-tune", action="store_true")
    ap.add_argument("--tune-runtimes", help="comma-separated runtimes edge-sdk tune may choose among (default: all)")
    ap.add_argument("--tune-precisions", help="comma-separated precisions edge-sdk tune may choose among")
    ap.add_argument("--tune-repeats", type=int, default=2, help="timed generations per tune candidate")
    ap.add_argument("--reuse-reference", action="store_true",
                    help="take the PyTorch reference image from an earlier sitting with the same arguments")
    ap.add_argument("--reference-once", action="store_true",
                    help="run the PyTorch reference in the first round only (the slowest pipeline, same image)")
    ap.add_argument("--optional-peers", action="store_true", help="also try installing stable-diffusion-cpp-python")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per pipeline process")
    ap.add_argument("--lock", type=Path, help="flock this file around each pipeline process (e.g. "
                                               "/work/data/bigmem.lock for sd15 on a shared machine)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--no-markdown", action="store_true", help="write the JSON and chart only")
    ap.add_argument("--render", type=Path, metavar="JSON", help="only redraw the chart and table of a results file")
    a = ap.parse_args()
    if a.render:
        results = json.loads(a.render.read_text())
        png = a.render.with_suffix(".png")
        r = results["args"]
        chart(results["summary"], png, f"{r['model']}: {r['size']}x{r['size']}, {r['steps']} steps, "
                                       f"{r['threads']} threads (PSNR vs PyTorch fp32 in brackets)")
        write_markdown(results, r["model"], png)
        print(table(results["summary"]))
        return
    a.steps = a.steps or SIZES[a.model]["steps"]
    a.size = a.size or SIZES[a.model]["size"]
    a.rounds = a.rounds or (1 if a.quick else 2)
    a.repeats = a.repeats or (1 if a.quick else 3)
    suffix = "" if a.model == "sd" else f"-{a.model}"
    a.out = a.out or BENCH / "results" / f"peers{suffix}.json"
    sys.path.insert(0, str(HERE))
    work = a.work / a.model
    work.mkdir(parents=True, exist_ok=True)

    venv = ensure_venv(a.venv, optional=a.optional_peers)
    folder = work / "folder"
    if a.model == "sd":
        from sd_folder import write_sd_shaped_folder

        write_sd_shaped_folder(folder)
    else:
        sd15_view(a.sd15_folder, folder)
    ex = exports(folder, work, venv, tune=not (a.quick or a.no_tune), steps=a.steps, size=a.size, threads=a.threads,
                 tune_runtimes=a.tune_runtimes, tune_precisions=a.tune_precisions, tune_repeats=a.tune_repeats,
                 deep_cache=SIZES[a.model]["tune_deep_cache"])
    plans = edge_plans(Path(ex["bundle"]), ex.get("tuned"), a.threads, work, SIZES[a.model]["deep_cache"])
    rows = pipelines(work, venv, plans)
    if a.only:
        keys = [k.strip().lower() for k in a.only.split(";" if ";" in a.only else ",")]  # ';' when names have commas
        exact = {k for k in keys if k in {p["name"].lower() for p in rows}}  # a full name: that row only
        rows = [p for p in rows if p.get("reference") or p["name"].lower() in exact
                or any(k in p["name"].lower() for k in keys if k not in exact)]

    from edge_sdk.pipelines.seeds import RowNoise

    latents = work / "latents.npy"
    np.save(latents, RowNoise(a.seed, 1).draw((4, a.size // 8, a.size // 8)))
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "load_average": round(os.getloadavg()[0], 2),
                               "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
                               "peers": venv, "exports": ex, "pipelines": rows, "rounds": []}
    try:
        from edge_sdk.measure.bench import machine_info

        results["machine"] = machine_info()
    except Exception as e:  # noqa: BLE001 - the table matters more than the machine's description
        results["machine"] = {"error": str(e)}
    ref_image: dict[str, np.ndarray] = {}
    # The reference image by arguments, for --reuse-reference (a sitting of a few rows, no PyTorch run).
    ref_file = work / f"reference-{a.size}-{a.steps}-{a.guidance}-{a.seed}.npy"
    for rnd in range(a.rounds):
        order = rows[rnd % len(rows):] + rows[:rnd % len(rows)]
        this: dict[str, dict[str, Any]] = {}
        images: dict[str, np.ndarray] = dict(ref_image)
        for p in sorted(order, key=lambda p: not p.get("reference")):  # the reference image first
            if p.get("reference") and rnd and a.reference_once and p["name"] in images:
                continue  # its image is the same every round (same latents); its time is measured once
            if p.get("reference") and a.reuse_reference and ref_file.is_file():
                images[p["name"]] = np.load(ref_file)  # an earlier sitting's, same latents and arguments
                log(f"round {rnd + 1}/{a.rounds}: {p['name']}: image from {ref_file} (not timed)")
                continue
            log(f"round {rnd + 1}/{a.rounds}: {p['name']}")
            img = work / f"image-{p['kind']}-{abs(hash(p['name'])) % 10**8}.npy"
            r = run_child(p, a, latents, img)
            if "error" not in r:
                images[p["name"]] = np.load(img)
                if p.get("reference"):
                    np.save(ref_file, images[p["name"]])
                ref = next((images[q["name"]] for q in rows if q.get("reference") and q["name"] in images), None)
                r["psnr_db"] = None if ref is None else psnr(ref, images[p["name"]])
                log(f"   median {statistics.median(r['seconds']):.3f} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
                    f"PSNR {r['psnr_db']}")
            else:
                log(f"   failed: {r['error']}")
            this[p["name"]] = r
            # Partial results after every pipeline: a run cut short still leaves what it measured.
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.with_suffix(".partial.json").write_text(json.dumps(
                {**results, "rounds": [*results["rounds"], this]}, indent=2, default=str) + "\n")
        results["rounds"].append(this)
        ref_image = {q["name"]: images[q["name"]] for q in rows if q.get("reference") and q["name"] in images}
    results["summary"] = summarize(rows, results["rounds"])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    a.out.with_suffix(".partial.json").unlink(missing_ok=True)
    png = a.out.with_suffix(".png")
    chart(results["summary"], png, f"{a.model}: {a.size}x{a.size}, {a.steps} steps, {a.threads} threads "
                                   "(PSNR vs PyTorch fp32 in brackets)")
    if not a.no_markdown:
        write_markdown(results, a.model, png)
    print(table(results["summary"]))
    log(f"wrote {a.out}, {png}" + ("" if a.no_markdown else f", {RESULTS_MD}"))


if __name__ == "__main__":
    main()
