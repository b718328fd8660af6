"""Torch reference generation for the demo model and its quality figure.

Host side (torch + diffusers' DPMSolverMultistepScheduler): the training script measures the
model card's accuracy with these functions and the tests rerun them, so both use one code path.
"""

from __future__ import annotations

from typing import Any

import torch

from edge_sdk.converters.demo import (
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_NUM_STEPS,
    LATENT_CHANNELS,
    NULL_CLASS,
    NUM_CLASSES,
    SCHEDULER_CONFIG,
)

__all__ = ["dpm_solver_scheduler", "generate_images", "class_accuracy"]


def dpm_solver_scheduler(scheduler_config: dict[str, Any] | None = None) -> Any:
    """diffusers' DPM-Solver++ (2M) configured with the schedule the denoiser was trained on."""
    from diffusers import DPMSolverMultistepScheduler

    config = dict(SCHEDULER_CONFIG if scheduler_config is None else scheduler_config)
    return DPMSolverMultistepScheduler(
        **config, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"
    )


@torch.no_grad()
def generate_images(
    modules: dict[str, torch.nn.Module],
    class_labels: torch.Tensor,
    scaling_factor: float,
    *,
    num_steps: int = DEFAULT_NUM_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    latent_size: tuple[int, int] = (8, 8),
    seed: int = 0,
) -> torch.Tensor:
    """Images in [-1, 1], B x 3 x 4h x 4w, one per class label, with classifier-free guidance.

    Noise comes from ``torch.Generator().manual_seed(seed)`` so a seed gives the same images.
    """
    denoiser, decoder = modules["denoiser"], modules["vae_decoder"]
    labels = class_labels.to(torch.int64)
    batch = labels.shape[0]
    scheduler = dpm_solver_scheduler()
    scheduler.set_timesteps(num_steps)
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn((batch, LATENT_CHANNELS, *latent_size), generator=generator)
    latents = latents * scheduler.init_noise_sigma
    null = torch.full_like(labels, NULL_CLASS)
    both_labels = torch.cat([labels, null])
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        timestep = torch.full((2 * batch,), float(t), dtype=torch.float32)
        cond, uncond = denoiser(model_in, timestep, both_labels).chunk(2)
        noise = uncond + guidance_scale * (cond - uncond)
        latents = scheduler.step(noise, t, latents).prev_sample
    return decoder(latents / scaling_factor).clamp(-1.0, 1.0)


@torch.no_grad()
def class_accuracy(
    modules: dict[str, torch.nn.Module],
    scaling_factor: float,
    *,
    samples_per_class: int = 20,
    num_steps: int = DEFAULT_NUM_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    seed: int = 0,
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Fraction of generated images the classifier assigns to the class they were asked for.

    Returns (accuracy, images, requested labels); images are ordered class-major.
    """
    labels = torch.arange(NUM_CLASSES).repeat_interleave(samples_per_class)
    images = generate_images(
        modules,
        labels,
        scaling_factor,
        num_steps=num_steps,
        guidance_scale=guidance_scale,
        seed=seed,
    )
    predicted = modules["classifier"](images).argmax(dim=1)
    return float((predicted == labels).float().mean()), images, labels
