"""Euler ancestral (k-diffusion ``sample_euler_ancestral``): an Euler step to ``sigma_down``,
then fresh noise of size ``sigma_up`` (one draw per step, the last included).

Matches diffusers' ``EulerAncestralDiscreteScheduler``; ``sample`` prediction, which diffusers
leaves unimplemented, uses the model output as x0 like the Euler sampler does.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from edge_sdk.samplers.base import COMMON_DEFAULTS
from edge_sdk.samplers.euler import SigmaSampler, x0_from_sigma_output


class EulerAncestralSampler(SigmaSampler):
    name = "euler_ancestral"
    diffusers_class = "EulerAncestralDiscreteScheduler"
    needs_noise = True
    defaults: ClassVar[dict[str, Any]] = dict(COMMON_DEFAULTS)

    def _set_timesteps(self, num_steps: int) -> None:
        ts, sig, _ = self._spaced_sigmas(num_steps)
        self.sigmas = np.concatenate([sig, [0.0]]).astype(np.float32)
        self.timesteps = ts
        self.init_noise_sigma = self._init_sigma()

    def _step(self, model_output, index, sample, noise):
        sigma_from, sigma_to = self.sigmas[index], self.sigmas[index + 1]
        x0 = x0_from_sigma_output(self.prediction_type, model_output, sample, sigma_from)
        self.last_denoised = x0
        sigma_up = (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
        sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
        derivative = (sample - x0) / sigma_from
        prev = sample + derivative * (sigma_down - sigma_from)
        return prev + self._draw_noise(sample.shape, noise) * sigma_up
