"""DDIM (Song et al. 2020), deterministic at ``eta=0`` and ancestral-like as ``eta`` grows.

Matches diffusers' ``DDIMScheduler``, including its choice of previous timestep
``t - num_train_timesteps // steps`` (not the next scheduled one) for every spacing. ``eta`` is
read from the config (diffusers takes it per step call; a bundle records it here).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from edge_sdk.errors import UsageError
from edge_sdk.samplers.base import COMMON_DEFAULTS, Sampler
from edge_sdk.samplers.ddpm import x0_and_eps
from edge_sdk.samplers.schedule import spaced_timesteps


class DDIMSampler(Sampler):
    name = "ddim"
    diffusers_class = "DDIMScheduler"
    defaults: ClassVar[dict[str, Any]] = {
        **COMMON_DEFAULTS,
        "timestep_spacing": "leading",
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": True,
        "thresholding": False,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
        "eta": 0.0,
    }

    def __init__(self, config=None) -> None:
        super().__init__(config)
        eta = self.config["eta"]
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or eta < 0:
            raise UsageError(f"ddim eta must be a number >= 0, got {eta!r}",
                             hint="0 is deterministic DDIM, 1 is DDPM-like")
        self.eta = float(eta)
        self.final_alpha_cumprod = (
            np.float32(1.0) if self.config["set_alpha_to_one"] else self.alphas_cumprod[0]
        )

    @property
    def needs_noise(self) -> bool:  # type: ignore[override]
        return self.eta > 0

    def _set_timesteps(self, num_steps: int) -> None:
        ts = spaced_timesteps(
            self.config["timestep_spacing"], self.num_train_timesteps, num_steps,
            self.config["steps_offset"],
        )
        self.timesteps = ts.round().astype(np.int64)

    def _step(self, model_output, index, sample, noise):
        t = int(self.timesteps[index])
        prev_t = t - self.num_train_timesteps // self.num_steps
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        one = np.float32(1.0)
        b_t = one - a_t
        x0, eps = x0_and_eps(self.prediction_type, model_output, sample, a_t)
        x0 = self._clip_or_threshold(x0)
        self.last_denoised = x0
        variance = (one - a_prev) / b_t * (one - a_t / a_prev)
        std = np.float32(self.eta) * variance**0.5
        prev = a_prev**0.5 * x0 + (one - a_prev - std**2) ** 0.5 * eps
        if self.eta > 0:
            prev = prev + std * self._draw_noise(sample.shape, noise)
        return prev
