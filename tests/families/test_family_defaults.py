"""Each family's defaults come from its folder: the shipped scheduler picks the sampler, the family
picks steps and guidance, the UNet's sample_size times the VAE factor picks the size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_sdk.converters import families
from edge_sdk.converters.scheduler_config import PORTED, read_scheduler_config
from edge_sdk.samplers import get_sampler

SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


@pytest.mark.parametrize("scheduler,sampler", [
    ("PNDMScheduler", "ddim"), ("DDIMScheduler", "ddim"), ("DPMSolverMultistepScheduler", "dpmpp_2m"),
    ("EulerDiscreteScheduler", "euler"), ("EulerAncestralDiscreteScheduler", "euler_ancestral"),
    ("UniPCMultistepScheduler", "unipc"), ("LMSDiscreteScheduler", "euler"), ("HeunDiscreteScheduler", "heun"),
    ("LCMScheduler", "lcm"), ("DDPMScheduler", "ddpm")])
def test_shipped_scheduler_gives_its_sampler(scheduler, sampler, tmp_path):
    """The config as diffusers' save_pretrained writes it selects the sampler, and that sampler
    builds from it with the same schedule (betas, training steps, spacing, prediction type)."""
    import diffusers

    getattr(diffusers, scheduler)(**SD, prediction_type="v_prediction").save_pretrained(str(tmp_path))
    raw = json.loads((tmp_path / "scheduler_config.json").read_text())
    index = {"_class_name": "StableDiffusionPipeline"}
    section = families.sampler_section("sd", index, read_scheduler_config(tmp_path / "scheduler_config.json"), "text")
    assert section["default_sampler"] == sampler
    assert (section["default_steps"], section["default_guidance"]) == ((4 if sampler == "lcm" else 30), 7.5)
    s = get_sampler(section["default_sampler"], section["config"])
    assert s.prediction_type == "v_prediction"
    assert s.config["timestep_spacing"] == raw.get("timestep_spacing", s.config["timestep_spacing"])
    assert abs(float(s.betas[-1]) - 0.012) < 1e-7 and s.num_train_timesteps == 1000
    if scheduler in PORTED:
        assert type(s).diffusers_class == scheduler


def test_sd_pipelines_rewrite_outdated_scheduler_keys_as_diffusers_does():
    raw = {"_class_name": "DDIMScheduler", "clip_sample": True, "steps_offset": 0, **SD}
    fixed = families.scheduler_config({"_class_name": "StableDiffusionPipeline"}, raw)
    assert fixed["clip_sample"] is False and fixed["steps_offset"] == 1 and "_class_name" not in fixed
    kept = families.scheduler_config({"_class_name": "DDPMPipeline"}, raw)
    assert kept["clip_sample"] is True and kept["steps_offset"] == 0


@pytest.mark.parametrize("path,index,unet,family", [
    ("m/stable-diffusion-v1-5", {"_class_name": "StableDiffusionPipeline"}, {}, "sd"),
    ("hub/models--stabilityai--sd-turbo/snapshots/abc", {"_class_name": "StableDiffusionPipeline"}, {}, "sd-turbo"),
    ("m/sdxl-base", {"_class_name": "StableDiffusionXLPipeline"}, {"addition_embed_type": "text_time"}, "sdxl"),
    ("m/sdxl-turbo", {"_class_name": "StableDiffusionXLPipeline"}, {"addition_embed_type": "text_time"}, "sdxl-turbo"),
    ("m/lcm-dreamshaper", {"_class_name": "LatentConsistencyModelPipeline"}, {"time_cond_proj_dim": 256}, "lcm"),
    ("m/ddpm-cifar", {"_class_name": "DDPMPipeline"}, {"_class_name": "UNet2DModel"}, "unet2d"),
    ("m/cls", {}, {"_class_name": "UNet2DModel", "num_class_embeds": 10}, "unet2d-class"),
])
def test_family_is_read_from_the_folder(path, index, unet, family, tmp_path):
    assert families.family_of(tmp_path / path, index, unet) == family


# -- converted bundles (slow: shares the session's converts with the parity tests) -----------------
@pytest.mark.slow
@pytest.mark.parametrize("family,sampler,steps,guidance", [
    ("sd2", "ddim", 30, 7.5), ("sd-turbo", "euler", 1, 1.0), ("sdxl", "euler", 30, 5.0),
    ("sdxl-turbo", "euler_ancestral", 1, 1.0), ("lcm", "lcm", 4, 8.5), ("unet2d", "ddim", 50, None)])
def test_run_with_no_flags_uses_the_family_defaults(family, sampler, steps, guidance, family_bundle, cli,
                                                    tmp_path):
    bundle = family_bundle(family)
    manifest = json.loads((Path(bundle) / "manifest.json").read_text())
    assert manifest["sampler"]["default_sampler"] == sampler and manifest["sampler"]["default_steps"] == steps
    args = ["run", str(bundle), "--out", str(tmp_path / "x.png"), "--json"]
    if family != "unet2d":
        args += ["--prompt", "a lighthouse at dusk"]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["sampler"] == sampler and info["steps_run"] == steps
    if family == "lcm":  # guidance is embedded in the UNet; CFG is off
        assert info["guidance"] == 1.0 and info["guidance_embedded"] == 8.5
    elif guidance is not None:
        assert info["guidance"] == guidance
    # Size: sample_size (8 latent cells, 16 pixels for the UNet2DModel) x the VAE's factor of 2.
    import cv2

    assert cv2.imread(str(tmp_path / "x.png")).shape == (16, 16, 3)


@pytest.mark.slow
def test_sd2_keeps_v_prediction_and_spacing(family_bundle):
    config = json.loads((Path(family_bundle("sd2")) / "manifest.json").read_text())["sampler"]["config"]
    assert config["prediction_type"] == "v_prediction" and config["timestep_spacing"] == "leading"
    assert config["steps_offset"] == 1
