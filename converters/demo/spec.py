"""The shipped demo model as a ModelSpec: what `edge-sdk demo` (and `edge-sdk convert
edge_sdk.converters.demo.spec:factory`) converts."""

from __future__ import annotations

import torch

from edge_sdk.converters import demo
from edge_sdk.converters.sources import component_from
from edge_sdk.converters.spec import ModelSpec


def factory() -> ModelSpec:
    mods = demo.load_demo_modules()
    h = w = demo.LATENT_SIZE
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(1, demo.LATENT_CHANNELS, h, w, generator=g)
    image = torch.rand(1, 3, demo.IMAGE_SIZE, demo.IMAGE_SIZE, generator=g) * 2 - 1
    spatial = {0: "batch", 2: "height", 3: "width"}
    denoiser = component_from(
        mods["denoiser"],
        {"sample": latent, "timestep": torch.tensor([500.0]), "class_labels": torch.tensor([3])},
        role="denoiser", output_names=["noise_pred"],
        dynamic_dims={"sample": spatial, "timestep": {0: "batch"}, "class_labels": {0: "batch"}},
        output_dynamic_dims={"noise_pred": spatial})
    decoder = component_from(
        mods["vae_decoder"], {"latent": latent}, role="decoder", output_names=["image"],
        dynamic_dims={"latent": spatial},
        output_dynamic_dims={"image": {0: "batch", 2: "out_height", 3: "out_width"}})
    encoder = component_from(
        mods["vae_encoder"], {"image": image}, role="encoder", output_names=["latent"],
        dynamic_dims={"image": spatial},
        output_dynamic_dims={"latent": {0: "batch", 2: "out_height", 3: "out_width"}})
    config = {"_class_name": "DPMSolverMultistepScheduler", **demo.SCHEDULER_CONFIG}
    return ModelSpec(
        name="edge-sdk-demo-digits",
        description="Class-conditional latent diffusion of coloured digits, trained in-repo "
                    "(see converters/demo/MODEL_CARD.md).",
        components={"denoiser": denoiser, "decoder": decoder, "encoder": encoder},
        model={"kind": "latent_diffusion", "conditioning": "class", "num_classes": demo.NUM_CLASSES,
               "class_names": list(demo.CLASS_NAMES), "null_class": demo.NULL_CLASS,
               "sample_size": [h, w], "in_channels": demo.LATENT_CHANNELS,
               "latent_scale_factor": float(demo.SCALING_FACTOR), "vae_downsample": demo.VAE_DOWNSAMPLE_FACTOR,
               "spatial_multiple": 2, "image_channels": 3, "output_range": [-1.0, 1.0]},
        sampler={"default_sampler": "dpmpp_2m", "default_steps": demo.DEFAULT_NUM_STEPS,
                 "default_guidance": demo.DEFAULT_GUIDANCE_SCALE, "config": config},
    )
