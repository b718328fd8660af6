"""Euler (Karras et al. 2022, algorithm 2 without churn): first-order ODE steps in sigma space.

Matches diffusers' ``EulerDiscreteScheduler`` (sigmas interpolated at the spaced timesteps,
optional Karras sigmas, zero or ``sigma_min`` final sigma, discrete or continuous timesteps).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from edge_sdk.errors import UsageError
from edge_sdk.samplers.base import COMMON_DEFAULTS, Sampler
from edge_sdk.samplers.schedule import (
    karras_sigmas,
    sigma_to_t,
    sigmas_from_alphas_cumprod,
    spaced_timesteps,
)


def x0_from_sigma_output(
    prediction_type: str, model_output: np.ndarray, sample: np.ndarray, sigma: np.float32
) -> np.ndarray:
    """x0 from a model output in the sigma (variance-exploding) parameterisation."""
    if prediction_type == "epsilon":
        return sample - sigma * model_output
    if prediction_type == "v_prediction":
        return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
    return model_output


class SigmaSampler(Sampler):
    """Samplers that step in sigma space: input scaling, sigma-based add_noise."""

    clamp_terminal_snr = True

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.sigmas = np.zeros(0, dtype=np.float32)

    def _spaced_sigmas(self, num_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(float32 timesteps, float64 sigmas at them, float32 log of the training sigmas)."""
        ts = spaced_timesteps(
            self.config["timestep_spacing"], self.num_train_timesteps, num_steps,
            self.config["steps_offset"],
        ).astype(np.float32)
        full = sigmas_from_alphas_cumprod(self.alphas_cumprod)
        sig = np.interp(ts, np.arange(0, len(full)), full)
        return ts, sig, np.log(full)

    def _karras(self, sig: np.ndarray, num_steps: int) -> np.ndarray:
        smin = self.config.get("sigma_min")
        smax = self.config.get("sigma_max")
        smin = float(sig[-1]) if smin is None else float(smin)
        smax = float(sig[0]) if smax is None else float(smax)
        return karras_sigmas(smin, smax, num_steps)

    def _init_sigma(self) -> float:
        top = float(self.sigmas.max())
        if self.config["timestep_spacing"] in ("linspace", "trailing"):
            return top
        return float((np.float32(top) ** 2 + 1) ** 0.5)

    def scale_model_input(self, sample: np.ndarray, index: int) -> np.ndarray:
        self._check_ready(index)
        sigma = self.sigmas[index]
        return (np.asarray(sample, dtype=np.float32) / (sigma**2 + 1) ** 0.5).astype(np.float32)

    def _add_noise(self, original, noise, index):
        return original + noise * self.sigmas[index]


class EulerSampler(SigmaSampler):
    name = "euler"
    diffusers_class = "EulerDiscreteScheduler"
    defaults: ClassVar[dict[str, Any]] = {
        **COMMON_DEFAULTS,
        "interpolation_type": "linear",
        "use_karras_sigmas": False,
        "sigma_min": None,
        "sigma_max": None,
        "timestep_type": "discrete",
        "final_sigmas_type": "zero",
    }

    def __init__(self, config=None) -> None:
        super().__init__(config)
        if self.config["interpolation_type"] != "linear":
            raise UsageError(
                f"euler interpolation_type {self.config['interpolation_type']!r} is not supported",
                hint="use 'linear'",
            )
        if self.config["final_sigmas_type"] not in ("zero", "sigma_min"):
            raise UsageError("final_sigmas_type must be 'zero' or 'sigma_min'")

    def _set_timesteps(self, num_steps: int) -> None:
        ts, sig, log_sigmas = self._spaced_sigmas(num_steps)
        if self.config["use_karras_sigmas"]:
            sig = self._karras(sig, num_steps)
            ts = sigma_to_t(sig, log_sigmas)
        if self.config["final_sigmas_type"] == "sigma_min":
            a0 = self.alphas_cumprod[0]
            last = ((1 - a0) / a0) ** 0.5
        else:
            last = 0.0
        self.sigmas = np.concatenate([sig, [last]]).astype(np.float32)
        if self.config["timestep_type"] == "continuous" and self.prediction_type == "v_prediction":
            self.timesteps = (np.float32(0.25) * np.log(self.sigmas[:-1])).astype(np.float32)
        else:
            self.timesteps = np.asarray(ts, dtype=np.float32)
        self.init_noise_sigma = self._init_sigma()

    def _step(self, model_output, index, sample, noise):
        sigma = self.sigmas[index]
        x0 = x0_from_sigma_output(self.prediction_type, model_output, sample, sigma)
        self.last_denoised = x0
        derivative = (sample - x0) / sigma
        return sample + derivative * (self.sigmas[index + 1] - sigma)
