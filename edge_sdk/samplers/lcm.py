"""LCM: latent consistency models (Luo et al. 2023), 1 to 8 steps.

Each step maps the sample straight to a consistency-model x0 (boundary-condition scalings
``c_skip``/``c_out``), then re-noises it to the next timestep with fresh noise (not on the last
step). Matches diffusers' ``LCMScheduler``, including the img2img schedule that shrinks with
``strength``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from edge_sdk.errors import UsageError
from edge_sdk.samplers.base import COMMON_DEFAULTS, Sampler
from edge_sdk.samplers.ddpm import x0_and_eps

SIGMA_DATA = 0.5


class LCMSampler(Sampler):
    name = "lcm"
    diffusers_class = "LCMScheduler"
    needs_noise = True
    defaults: ClassVar[dict[str, Any]] = {
        **COMMON_DEFAULTS,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "original_inference_steps": 50,
        "clip_sample": False,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": True,
        "thresholding": False,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
        "timestep_spacing": "leading",  # read by diffusers but unused by its LCM schedule
        "timestep_scaling": 10.0,
    }

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.final_alpha_cumprod = (
            np.float32(1.0) if self.config["set_alpha_to_one"] else self.alphas_cumprod[0]
        )
        self._strength = 1.0

    def set_timesteps_img2img(self, num_steps: int, strength: float) -> int:
        # LCM's img2img schedule is drawn from the first ``strength`` of the distillation steps.
        self._strength = float(strength)
        try:
            return super().set_timesteps_img2img(num_steps, strength)
        finally:
            self._strength = 1.0

    def _set_timesteps(self, num_steps: int) -> None:
        original = int(self.config["original_inference_steps"])
        if not 1 <= original <= self.num_train_timesteps:
            raise UsageError(
                f"original_inference_steps={original} must be in 1..{self.num_train_timesteps}"
            )
        k = self.num_train_timesteps // original
        origin = np.arange(1, int(original * self._strength) + 1) * k - 1
        if num_steps > original:
            raise UsageError(
                f"lcm steps={num_steps} exceeds original_inference_steps={original}",
                hint="LCM is distilled for few steps: use 1 to 8",
            )
        if len(origin) // num_steps < 1:
            raise UsageError(
                f"lcm with strength {self._strength} has {len(origin)} distillation timesteps, "
                f"fewer than steps={num_steps}",
                hint="use fewer steps or a higher strength",
            )
        origin = origin[::-1].copy()
        idx = np.floor(np.linspace(0, len(origin), num=num_steps, endpoint=False)).astype(np.int64)
        self.timesteps = origin[idx].astype(np.int64)

    def _step(self, model_output, index, sample, noise):
        t = int(self.timesteps[index])
        prev_t = int(self.timesteps[index + 1]) if index + 1 < len(self.timesteps) else t
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        scaled = np.float32(t * self.config["timestep_scaling"])
        sd2 = np.float32(SIGMA_DATA**2)
        c_skip = sd2 / (scaled**2 + sd2)
        c_out = scaled / (scaled**2 + sd2) ** 0.5
        x0, _ = x0_and_eps(self.prediction_type, model_output, sample, a_t)
        x0 = self._clip_or_threshold(x0)
        denoised = c_out * x0 + c_skip * sample
        self.last_denoised = denoised
        if index == len(self.timesteps) - 1:
            return denoised
        eps = self._draw_noise(sample.shape, noise)
        return a_prev**0.5 * denoised + (np.float32(1.0) - a_prev) ** 0.5 * eps
