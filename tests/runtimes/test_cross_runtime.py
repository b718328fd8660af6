"""One bundle, every runtime on this CPU: the same seed gives the same image, and the torch reference's.

The bundle holds the tiny denoiser as ONNX, OpenVINO IR and TFLite (fp32). Each runtime generates
through ``edge_sdk.load(bundle, runtime=...)``; the reference is a plain loop over the same numpy
sampler with the torch module as the denoiser, following the documented seed rule
(``edge_sdk.pipelines.seeds``: the row's generator draws the start noise, then each step's noise).

Tolerance (fp32): each denoiser call differs from torch by summation order only (~1e-6 relative);
8 sampler steps compound that to at most 1.3e-5 here (DDIM on ONNX Runtime), so the final raw
images must agree to 1e-4 relative L2, and the uint8 images to 1 level (a value sitting on a
rounding boundary may round either way)
with at most 1 % of pixels differing at all.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edge_sdk
from edge_sdk.samplers import get_sampler, make_generator

pytestmark = pytest.mark.slow  # converts or plans whole bundles: seconds each, in the full run

RAW_REL = 1e-4
RUNS = [("onnxruntime", "onnx"), ("openvino", "openvino"), ("openvino", "onnx"), ("litert", "tflite")]


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def torch_reference(model, sampler: str, steps: int, seed: int, config: dict) -> np.ndarray:
    s = get_sampler(sampler, config)
    s.set_timesteps(steps)
    g = make_generator(seed)
    x = g.standard_normal((1, 3, 32, 32), dtype=np.float32) * np.float32(s.init_noise_sigma)
    for i, t in enumerate(s.timesteps):
        xin = s.scale_model_input(x, i)
        with torch.no_grad():
            out = model(torch.from_numpy(np.ascontiguousarray(xin, np.float32)),
                        torch.full((1,), float(t), dtype=torch.float32)).numpy()
        noise = g.standard_normal((1, 3, 32, 32), dtype=np.float32) if s.needs_noise else None
        x = s.step(out, i, x, noise=noise)
    return x


@pytest.mark.parametrize("sampler", ["ddim", "euler_ancestral"])
def test_same_seed_same_image_on_every_runtime(sampler, tri_bundle, tiny_torch):
    model, _ = tiny_torch
    bundle = edge_sdk.open_bundle(tri_bundle)
    config = dict(bundle.sampler.get("config", {}))
    ref = torch_reference(model, sampler, 8, 11, config)
    results = {}
    for runtime, fmt in RUNS:
        with edge_sdk.load(bundle, runtime=runtime, format=fmt, threads=1) as gen:
            assert gen.plan.components["denoiser"].format == fmt
            results[(runtime, fmt)] = gen.generate(steps=8, seed=11, sampler=sampler)
    images = {k: r.images for k, r in results.items()}
    base = images[RUNS[0]]
    assert base.shape == (1, 32, 32, 3) and base.dtype == np.uint8
    assert base.std() > 5  # a real image, not a constant
    for key, r in results.items():
        assert rel_l2(r.raw, ref) < RAW_REL, (key, rel_l2(r.raw, ref))
        diff = np.abs(images[key].astype(int) - base.astype(int))
        assert diff.max() <= 1, (key, diff.max())
        assert (diff > 0).mean() <= 0.01, (key, (diff > 0).mean())
    # A different seed gives a different image (the comparison above is not vacuous).
    with edge_sdk.load(bundle, runtime="onnxruntime", format="onnx") as gen:
        other = gen.generate(steps=8, seed=12, sampler=sampler).images
    assert np.abs(other.astype(int) - base.astype(int)).mean() > 5
