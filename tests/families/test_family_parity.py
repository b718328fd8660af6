"""Every model family, from its hub-layout folder through `convert` to the numpy device pipeline,
against diffusers' own pipeline on the same folder.

Parity: same starting latents (ours, passed as ``latents=``), the same per-step noise for the
stochastic samplers (diffusers' ``randn_tensor`` hands out our draws in order), same sampler and
steps. Tolerance: relative L2 <= 1e-3 on the final image, the issue's bar for fp32; ONNX fp32 vs
PyTorch fp32 differs by float reassociation only (~1e-6 per call), far inside it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edge_sdk
from edge_sdk.pipelines.seeds import RowNoise

pytestmark = pytest.mark.slow
TOL = 1e-3


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _feed_noise(monkeypatch, modules: list[str], draws: list[np.ndarray]) -> None:
    """diffusers' randn_tensor in ``modules`` returns our per-step draws, in order."""
    queue = [torch.from_numpy(d) for d in draws]

    def randn_tensor(shape, *a, **k):
        t = queue.pop(0)
        assert tuple(t.shape) == tuple(shape), (t.shape, shape)
        return t

    import importlib

    for m in modules:
        monkeypatch.setattr(importlib.import_module(m), "randn_tensor", randn_tensor)


def _ours(bundle, seed: int = 0, **kw):
    with edge_sdk.load(bundle) as g:
        r = g.generate(seed=seed, **kw)
    return np.clip(r.raw, -1.0, 1.0), r


def _noise(shape: tuple[int, ...], steps: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    rows = RowNoise(seed, 1)
    first = rows.draw(shape)
    return first, [rows.draw(shape) for _ in range(steps)]


def _pipe(cls_name: str, folder):
    import diffusers

    cls = getattr(diffusers, cls_name)
    kw = {"safety_checker": None, "requires_safety_checker": False} if cls_name in (
        "StableDiffusionPipeline", "LatentConsistencyModelPipeline") else {}
    return cls.from_pretrained(str(folder), **kw).to(torch.float32)


def _image(out) -> np.ndarray:
    """diffusers' output_type='pt' image in [0, 1] -> NCHW in [-1, 1]."""
    return out.images.detach().numpy() * 2.0 - 1.0


# -- text-conditioned families -------------------------------------------------------------------
# SD 1.x ships PNDM, which runs as DDIM here (no numpy PLMS): its parity is per sampler, below.
# family, diffusers pipeline, our generate() kwargs, diffusers kwargs, stochastic scheduler modules
TEXT_CASES = [
    ("sd2", "StableDiffusionPipeline", dict(steps=4, guidance=3.0),
     dict(num_inference_steps=4, guidance_scale=3.0), []),
    ("sd-turbo", "StableDiffusionPipeline", dict(), dict(num_inference_steps=1, guidance_scale=0.0), []),
    ("sdxl", "StableDiffusionXLPipeline", dict(steps=4, guidance=5.0),
     dict(num_inference_steps=4, guidance_scale=5.0), []),
    ("sdxl", "StableDiffusionXLPipeline", dict(steps=3, guidance=4.0, negative_prompt="blurry"),
     dict(num_inference_steps=3, guidance_scale=4.0, negative_prompt="blurry"), []),
    ("sdxl-turbo", "StableDiffusionXLPipeline", dict(steps=2), dict(num_inference_steps=2, guidance_scale=0.0),
     ["diffusers.schedulers.scheduling_euler_ancestral_discrete"]),
    ("lcm", "LatentConsistencyModelPipeline", dict(), dict(num_inference_steps=4, guidance_scale=8.5),
     ["diffusers.schedulers.scheduling_lcm"]),
]


@pytest.mark.parametrize("family,pipeline,ours,theirs,stochastic", TEXT_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(TEXT_CASES)])
def test_text_family_matches_diffusers(family, pipeline, ours, theirs, stochastic, family_folder, family_bundle,
                                       monkeypatch, record_property):
    bundle = family_bundle(family)
    mine, r = _ours(bundle, prompt="a red cat, 1990s photo!", **ours)
    shape = r.latents.shape[1:]
    first, steps = _noise(shape, r.info["steps"])
    _feed_noise(monkeypatch, stochastic, steps)
    pipe = _pipe(pipeline, family_folder(family))
    with torch.no_grad():
        ref = _image(pipe("a red cat, 1990s photo!", latents=torch.from_numpy(first), output_type="pt", **theirs))
    assert mine.shape == ref.shape
    record_property("rel_l2", rel_l2(mine, ref))  # the figure itself, in the JUnit report
    assert rel_l2(mine, ref) <= TOL, (family, rel_l2(mine, ref))


@pytest.mark.parametrize("sampler,scheduler", [
    ("ddim", "DDIMScheduler"), ("euler", "EulerDiscreteScheduler"), ("dpmpp_2m", "DPMSolverMultistepScheduler"),
    ("unipc", "UniPCMultistepScheduler"), ("heun", "HeunDiscreteScheduler"),
    ("euler_ancestral", "EulerAncestralDiscreteScheduler")])
def test_sd1_samplers_match_diffusers_schedulers(sampler, scheduler, family_folder, family_bundle, monkeypatch,
                                                 record_property):
    """The SD 1.x bundle under each sampler vs the pipeline with that scheduler (from_config of the
    shipped one, as diffusers users switch them)."""
    import diffusers

    mine, r = _ours(family_bundle("sd1"), prompt="a cat", steps=3, guidance=2.0, sampler=sampler)
    first, steps = _noise(r.latents.shape[1:], 3)
    if sampler == "euler_ancestral":
        _feed_noise(monkeypatch, ["diffusers.schedulers.scheduling_euler_ancestral_discrete"], steps)
    pipe = _pipe("StableDiffusionPipeline", family_folder("sd1"))
    pipe.scheduler = getattr(diffusers, scheduler).from_config(pipe.scheduler.config)
    with torch.no_grad():
        ref = _image(pipe("a cat", latents=torch.from_numpy(first), output_type="pt", num_inference_steps=3,
                          guidance_scale=2.0))
    record_property("rel_l2", rel_l2(mine, ref))  # the figure itself, in the JUnit report
    assert rel_l2(mine, ref) <= TOL, (sampler, rel_l2(mine, ref))


# -- UNet2DModel folders (DDPMPipeline layout) ------------------------------------------------------
def test_unconditional_unet2d_matches_ddpm_pipeline(family_folder, family_bundle, monkeypatch, record_property):
    mine, r = _ours(family_bundle("unet2d"), steps=5, sampler="ddpm")
    first, steps = _noise(r.raw.shape[1:], 5)
    _feed_noise(monkeypatch, ["diffusers.pipelines.ddpm.pipeline_ddpm"], [first])
    _feed_noise(monkeypatch, ["diffusers.schedulers.scheduling_ddpm"], steps)
    pipe = _pipe("DDPMPipeline", family_folder("unet2d"))
    with torch.no_grad():
        ref = pipe(num_inference_steps=5, output_type="np").images  # NHWC in [0, 1]
    ref = ref.transpose(0, 3, 1, 2) * 2.0 - 1.0
    record_property("rel_l2", rel_l2(mine, ref))  # the figure itself, in the JUnit report
    assert rel_l2(mine, ref) <= TOL, rel_l2(mine, ref)


def test_class_conditional_unet2d_matches_diffusers_loop(family_folder, family_bundle, record_property):
    """No diffusers pipeline takes a class-conditional UNet2DModel: the reference is the loop every
    diffusers pipeline runs (set_timesteps, scale_model_input, unet, step) with the shipped DDIM."""
    from diffusers import DDIMScheduler, UNet2DModel

    mine, r = _ours(family_bundle("unet2d-class"), steps=6, class_labels=[7])
    folder = family_folder("unet2d-class")
    unet = UNet2DModel.from_pretrained(str(folder / "unet")).eval()
    sched = DDIMScheduler.from_pretrained(str(folder / "scheduler"))
    sched.set_timesteps(6)
    first, _ = _noise(r.raw.shape[1:], 0)
    x = torch.from_numpy(first) * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            out = unet(sched.scale_model_input(x, t), t, class_labels=torch.tensor([7])).sample
            x = sched.step(out, t, x).prev_sample
    ref = x.clamp(-1, 1).numpy()
    record_property("rel_l2", rel_l2(mine, ref))  # the figure itself, in the JUnit report
    assert rel_l2(mine, ref) <= TOL, rel_l2(mine, ref)
    other, _ = _ours(family_bundle("unet2d-class"), steps=6, class_labels=[3])
    assert rel_l2(other, ref) > 1e-2  # the label reaches the model
