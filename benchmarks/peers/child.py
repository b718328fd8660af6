"""One pipeline, in its own process: load it, generate once (warm-up), then time ``--repeats`` generations.

Run by ``benchmarks/peers/run.py`` with the interpreter that has the pipeline's package (the peers'
own virtual environment, or edge-sdk's for edge-sdk). Prints one JSON line: load and warm-up
seconds, every timed generation's seconds, the process's peak RSS (VmHWM), and where the last
image went (HWC float32 in [0, 1], ``--image``). Every pipeline starts from the same initial latents
(``--latents``, NCHW float32) wherever it accepts them; ``latents_used`` says whether it did.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _diffusers_call(pipe, a, latents, to_latents) -> Callable[[], np.ndarray]:
    def call() -> np.ndarray:
        out = pipe(a.prompt, negative_prompt=a.negative_prompt, num_inference_steps=a.steps,
                   guidance_scale=a.guidance, height=a.size, width=a.size, latents=to_latents(latents),
                   output_type="np")
        return np.asarray(out.images[0], dtype=np.float32)
    return call


def load_diffusers(a, latents) -> tuple[Callable[[], np.ndarray], bool]:
    import torch
    from diffusers import StableDiffusionPipeline

    _torch_threads(a.threads)
    pipe = StableDiffusionPipeline.from_pretrained(a.model, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    call = _diffusers_call(pipe, a, latents, torch.from_numpy)

    def run() -> np.ndarray:
        with torch.inference_mode():
            return call()
    return run, True


def load_optimum_intel(a, latents) -> tuple[Callable[[], np.ndarray], bool]:
    import torch
    from optimum.intel import OVStableDiffusionPipeline

    _torch_threads(a.threads)  # the scheduler's few tensor ops
    cfg: dict[str, Any] = {"INFERENCE_NUM_THREADS": a.threads}
    if a.precision:
        cfg["INFERENCE_PRECISION_HINT"] = a.precision
    pipe = OVStableDiffusionPipeline.from_pretrained(a.model, ov_config=cfg, compile=True)
    pipe.set_progress_bar_config(disable=True)
    return _diffusers_call(pipe, a, latents, torch.from_numpy), True


def load_optimum_onnx(a, latents) -> tuple[Callable[[], np.ndarray], bool]:
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTStableDiffusionPipeline

    _torch_threads(a.threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    pipe = ORTStableDiffusionPipeline.from_pretrained(a.model, session_options=so, provider="CPUExecutionProvider")
    pipe.set_progress_bar_config(disable=True)
    return _diffusers_call(pipe, a, latents, torch.from_numpy), True


def load_ov_genai(a, latents) -> tuple[Callable[[], np.ndarray], bool]:
    import openvino as ov
    import openvino_genai as genai

    drawn: list[tuple[int, ...]] = []

    class Latents(genai.Generator):
        """Hands GenAI the shared initial latents (its API for custom noise: a Generator subclass)."""

        def __init__(self) -> None:
            genai.Generator.__init__(self)

        def next(self) -> float:  # only randn_tensor is used for the initial latents
            raise RuntimeError("unexpected scalar draw")

        def randn_tensor(self, shape) -> ov.Tensor:
            drawn.append(tuple(shape))
            if tuple(shape) != latents.shape:
                raise RuntimeError(f"GenAI asked for noise of shape {tuple(shape)}, have {latents.shape}")
            return ov.Tensor(latents.copy())

    props: dict[str, Any] = {"INFERENCE_NUM_THREADS": a.threads}
    if a.precision:
        props["INFERENCE_PRECISION_HINT"] = a.precision
    pipe = genai.Text2ImagePipeline(a.model, "CPU", **props)

    def run() -> np.ndarray:
        t = pipe.generate(a.prompt, negative_prompt=a.negative_prompt, width=a.size, height=a.size,
                          num_inference_steps=a.steps, guidance_scale=a.guidance, generator=Latents())
        return np.asarray(t.data[0], dtype=np.float32) / 255.0  # uint8 HWC: GenAI returns 8-bit images
    return run, drawn


def load_sd_cpp(a, latents) -> tuple[Callable[[], np.ndarray], bool]:
    """stable-diffusion.cpp (ggml) through its Python binding, from the diffusers folder itself, with
    its own weight type (the folder's fp32), DDIM (trailing) and its own noise: it takes no latents,
    so its PSNR shows a different image, not a worse one."""
    from stable_diffusion_cpp import StableDiffusion

    sd = StableDiffusion(model_path=a.model, n_threads=a.threads, vae_decode_only=True, verbose=False)

    def run() -> np.ndarray:
        try:
            img = sd.generate_image(prompt=a.prompt, negative_prompt=a.negative_prompt, width=a.size,
                                    height=a.size, cfg_scale=a.guidance, sample_method="ddim_trailing",
                                    sample_steps=a.steps, seed=a.seed)[0]
        except ValueError as e:  # the binding reads a NULL image list when the C side made none
            raise RuntimeError(f"stable-diffusion.cpp made no image from {a.model} ({e}); with verbose=True its "
                               "log says why (here: 'get sd version from file failed')") from None
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return run, False


def load_edge_sdk(a, latents) -> tuple[Callable[[], np.ndarray], bool]:
    from edge_sdk.api import Generator
    from edge_sdk.bundle import Bundle
    from edge_sdk.pipelines.seeds import RowNoise
    from edge_sdk.planning.plan import Plan

    bundle = Bundle.open(a.model)
    plan = Plan.from_json(json.loads(open(a.plan).read()))
    gen = Generator(bundle, plan)
    # edge-sdk draws its own seeded noise; the harness's shared latents are that noise (checked here).
    same = latents.shape[0] == 1 and np.array_equal(RowNoise(a.seed, 1).draw(latents.shape[1:]), latents)

    def run() -> np.ndarray:
        raw = gen.generate(prompt=a.prompt, negative_prompt=a.negative_prompt, steps=a.steps, seed=a.seed,
                           guidance=a.guidance, height=a.size, width=a.size).raw
        return np.clip((raw[0].transpose(1, 2, 0) + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)
    return run, bool(same)


LOADERS = {"diffusers": load_diffusers, "optimum-intel": load_optimum_intel, "optimum-onnx": load_optimum_onnx,
           "ov-genai": load_ov_genai, "sd-cpp": load_sd_cpp, "edge-sdk": load_edge_sdk}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", choices=sorted(LOADERS), required=True)
    ap.add_argument("--model", required=True, help="folder the pipeline loads (export or bundle)")
    ap.add_argument("--plan", help="edge-sdk: plan JSON file")
    ap.add_argument("--precision", default="", help="OpenVINO INFERENCE_PRECISION_HINT; empty: the plugin's default")
    ap.add_argument("--latents", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--prompt", default="a photograph of an astronaut riding a horse")
    ap.add_argument("--negative-prompt", default="")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    latents = np.load(a.latents).astype(np.float32)
    t0 = time.perf_counter()
    run, used = LOADERS[a.kind](a, latents)
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    image = run()
    warm_s = time.perf_counter() - t1
    times, cpu = [], []
    for _ in range(a.repeats):
        t, c = time.perf_counter(), time.process_time()
        image = run()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    if isinstance(used, list):  # drawn through our generator: it did take the shared latents
        used = bool(used)
    np.save(a.image, image)
    print(json.dumps({"load_s": load_s, "warmup_s": warm_s, "seconds": times, "cpu_seconds": cpu,
                      "peak_rss_mb": _peak_rss_mb(), "latents_used": used, "pid": os.getpid()}))


if __name__ == "__main__":
    main()
