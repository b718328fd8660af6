"""DDPM (Ho et al. 2020): the ancestral sampler the models were trained for; the long reference.

Matches diffusers' ``DDPMScheduler``: with fewer steps than training timesteps each step jumps
to the next scheduled timestep with the matching posterior variance.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from edge_sdk.errors import UsageError
from edge_sdk.samplers.base import COMMON_DEFAULTS, Sampler
from edge_sdk.samplers.schedule import spaced_timesteps

VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "learned", "learned_range")


def x0_and_eps(
    prediction_type: str, model_output: np.ndarray, sample: np.ndarray, alpha_prod_t: np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """(x0, eps) from a model output of the given type at cumulative alpha ``alpha_prod_t``."""
    beta_prod_t = np.float32(1.0) - alpha_prod_t
    sa, sb = alpha_prod_t**0.5, beta_prod_t**0.5
    if prediction_type == "epsilon":
        return (sample - sb * model_output) / sa, model_output
    if prediction_type == "sample":
        return model_output, (sample - sa * model_output) / sb
    return sa * sample - sb * model_output, sa * model_output + sb * sample


class DDPMSampler(Sampler):
    name = "ddpm"
    diffusers_class = "DDPMScheduler"
    needs_noise = True
    defaults: ClassVar[dict[str, Any]] = {
        **COMMON_DEFAULTS,
        "timestep_spacing": "leading",
        "variance_type": "fixed_small",
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "thresholding": False,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
    }

    def __init__(self, config=None) -> None:
        super().__init__(config)
        if self.config["variance_type"] not in VARIANCE_TYPES:
            raise UsageError(
                f"ddpm does not support variance_type {self.config['variance_type']!r}",
                hint=f"use one of {', '.join(VARIANCE_TYPES)}",
            )

    def _set_timesteps(self, num_steps: int) -> None:
        ts = spaced_timesteps(
            self.config["timestep_spacing"], self.num_train_timesteps, num_steps,
            self.config["steps_offset"],
        )
        self.timesteps = ts.round().astype(np.int64)

    def _alpha_prev(self, index: int) -> np.float32:
        if index + 1 < len(self.timesteps):
            return self.alphas_cumprod[int(self.timesteps[index + 1])]
        return np.float32(1.0)

    def _step(self, model_output, index, sample, noise):
        t = int(self.timesteps[index])
        variance_type = self.config["variance_type"]
        predicted_variance = None
        c = sample.shape[1]
        if variance_type in ("learned", "learned_range") and model_output.shape[1] == 2 * c:
            model_output, predicted_variance = model_output[:, :c], model_output[:, c:]
        elif variance_type in ("learned", "learned_range"):
            raise UsageError(
                f"ddpm variance_type {variance_type!r} needs a model output with {2 * c} channels "
                f"(mean and variance), got {model_output.shape[1]}",
                hint="use variance_type 'fixed_small' for models that predict only the mean",
            )
        a_t = self.alphas_cumprod[t]
        a_prev = self._alpha_prev(index)
        one = np.float32(1.0)
        b_t, b_prev = one - a_t, one - a_prev
        cur_alpha = a_t / a_prev
        cur_beta = one - cur_alpha
        x0, _ = x0_and_eps(self.prediction_type, model_output, sample, a_t)
        x0 = self._clip_or_threshold(x0)
        self.last_denoised = x0
        prev = (a_prev**0.5 * cur_beta / b_t) * x0 + (cur_alpha**0.5 * b_prev / b_t) * sample
        if t > 0:
            eps = self._draw_noise(sample.shape, noise)
            variance = max(b_prev / b_t * cur_beta, np.float32(1e-20))
            if variance_type == "fixed_small":
                prev = prev + variance**0.5 * eps
            elif variance_type == "fixed_small_log":
                prev = prev + np.exp(np.float32(0.5) * np.log(variance)) * eps
            elif variance_type == "fixed_large":
                prev = prev + cur_beta**0.5 * eps
            elif variance_type == "learned":
                prev = prev + predicted_variance**0.5 * eps
            else:  # learned_range: interpolate log variance between the two fixed bounds
                frac = (predicted_variance + 1) / 2
                log_var = frac * np.log(cur_beta) + (1 - frac) * np.log(variance)
                prev = prev + np.exp(np.float32(0.5) * log_var) * eps
        return prev
