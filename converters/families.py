"""Which published model family a diffusers folder is, and the defaults that family runs with.

The family decides what ``edge-sdk run bundle --prompt ...`` does with no flags: sampler, steps,
guidance (the size comes from the UNet's ``sample_size`` times the VAE factor). It is read from
the folder itself: the pipeline class in model_index.json, the UNet config (``addition_embed_type``
for SDXL, ``time_cond_proj_dim`` for LCM-distilled UNets), and for the Turbo distillations, which
ship ordinary configs, the folder's name (``sd-turbo``/``sdxl-turbo``, as the hub and its cache
name them).

Guidance here is edge-sdk's: 1.0 means classifier-free guidance is off (diffusers writes 0.0 for
Turbo, and treats every value <= 1 as off).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# family -> (steps, guidance) as the family's diffusers pipeline and model card use them.
DEFAULTS: dict[str, tuple[int, float]] = {
    "sd": (30, 7.5), "sdxl": (30, 5.0), "sd-turbo": (1, 1.0), "sdxl-turbo": (1, 1.0),
    "lcm": (4, 8.5), "unet2d": (50, 1.0), "unet2d-class": (50, 1.0),
}
# The Stable Diffusion pipelines rewrite two outdated scheduler keys before sampling
# (StableDiffusionPipeline.__init__): we apply the same rewrite so the image is the reference's.
_SD_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline", "LatentConsistencyModelPipeline",
                 "StableDiffusionImg2ImgPipeline")


def family_of(root: Path, index: dict[str, Any], unet_config: dict[str, Any]) -> str:
    """One of DEFAULTS' keys for the folder ``root``."""
    if unet_config.get("_class_name") == "UNet2DModel" or "unet" in index and _cls(index["unet"]) == "UNet2DModel":
        return "unet2d-class" if unet_config.get("num_class_embeds") else "unet2d"
    if unet_config.get("time_cond_proj_dim"):
        return "lcm"
    xl = unet_config.get("addition_embed_type") == "text_time" or "XL" in str(index.get("_class_name", ""))
    names = [p.name.lower() for p in (root.resolve(), *root.resolve().parents)][:4]
    if any("turbo" in n for n in names):
        return "sdxl-turbo" if xl else "sd-turbo"
    return "sdxl" if xl else "sd"


def _cls(entry: Any) -> str | None:
    return entry[1] if isinstance(entry, list) and len(entry) == 2 else None


def scheduler_config(index: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """The scheduler config as the folder's pipeline uses it (private ``_`` keys dropped)."""
    config = {k: v for k, v in raw.items() if not k.startswith("_")}
    if index.get("_class_name") in _SD_PIPELINES:
        if "steps_offset" in config and config["steps_offset"] != 1:
            config["steps_offset"] = 1
        if config.get("clip_sample") is True:
            config["clip_sample"] = False
    return config


def sampler_section(family: str, index: dict[str, Any], section: dict[str, Any], conditioning: str) -> dict[str, Any]:
    """The manifest's sampler section: the shipped scheduler's (read by converters/scheduler_config.py,
    which picks the sampler) with the pipeline's key rewrite and the family's defaults."""
    from edge_sdk.converters.scheduler_config import DEFAULT_STEPS, check_sampler

    steps, guidance = DEFAULTS[family]
    section = {**section, "config": scheduler_config(index, section["config"])}
    name = section["default_sampler"]
    if family.startswith("unet2d") and name == "ddpm":
        name = "ddim"  # DDPMPipeline's 1000 ancestral steps are too many for a board; DDIM runs the same model
    section["default_sampler"] = name
    section["default_steps"] = DEFAULT_STEPS.get(name, steps)  # an LCM scheduler in any family: 4 steps
    if conditioning in ("text", "class"):
        section["default_guidance"] = guidance
    check_sampler(section, "scheduler/scheduler_config.json")
    return section
