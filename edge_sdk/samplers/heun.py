"""Heun (Karras et al. 2022, algorithm 1 without churn): an Euler step, then a trapezoid
correction with a second model call; two model calls per step except the last, which is Euler.

Matches diffusers' ``HeunDiscreteScheduler``: ``timesteps`` holds every model call
(``[t0, t1, t1, t2, t2, ...]``, length 2N-1), so the loop stays one call per index.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from edge_sdk.samplers.base import COMMON_DEFAULTS, SequentialSampler
from edge_sdk.samplers.euler import SigmaSampler, x0_from_sigma_output
from edge_sdk.samplers.schedule import sigma_to_t

_DEFAULTS = {k: v for k, v in COMMON_DEFAULTS.items() if k != "rescale_betas_zero_snr"}


class HeunSampler(SigmaSampler, SequentialSampler):
    name = "heun"
    diffusers_class = "HeunDiscreteScheduler"
    order = 2
    # diffusers' Heun has no zero-terminal-SNR option, so the key is ignored here too.
    defaults: ClassVar[dict[str, Any]] = {
        **_DEFAULTS,
        "rescale_betas_zero_snr": False,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "use_karras_sigmas": False,
        "clip_sample": False,
        "clip_sample_range": 1.0,
    }

    def __init__(self, config=None) -> None:
        cfg = dict(config or {})
        cfg.pop("rescale_betas_zero_snr", None)
        super().__init__(cfg)

    def _set_timesteps(self, num_steps: int) -> None:
        ts, sig, log_sigmas = self._spaced_sigmas(num_steps)
        if self.config["use_karras_sigmas"]:
            sig = self._karras(sig, num_steps)
            ts = sigma_to_t(sig, log_sigmas)
        sig = np.concatenate([sig, [0.0]]).astype(np.float32)
        # Every interior sigma is visited twice: once by the Euler step, once by the correction.
        self.sigmas = np.concatenate([sig[:1], np.repeat(sig[1:-1], 2), sig[-1:]])
        ts = np.asarray(ts, dtype=np.float32)
        self.timesteps = np.concatenate([ts[:1], np.repeat(ts[1:], 2)]).astype(np.float32)
        self.init_noise_sigma = self._init_sigma()

    def _reset(self) -> None:
        super()._reset()
        self._prev_derivative: np.ndarray | None = None
        self._dt: np.float32 | None = None
        self._sample: np.ndarray | None = None

    def _step(self, model_output, index, sample, noise):
        self._check_order(index)
        first = self._dt is None
        if first:
            sigma, sigma_next = self.sigmas[index], self.sigmas[index + 1]
            sigma_input = sigma
        else:
            sigma, sigma_next = self.sigmas[index - 1], self.sigmas[index]
            sigma_input = sigma_next
        x0 = x0_from_sigma_output(self.prediction_type, model_output, sample, sigma_input)
        if self.config["clip_sample"]:
            r = np.float32(self.config["clip_sample_range"])
            x0 = np.clip(x0, -r, r)
        self.last_denoised = x0
        if first:
            derivative = (sample - x0) / sigma
            dt = sigma_next - sigma
            self._prev_derivative, self._dt, self._sample = derivative, dt, sample
        else:
            derivative = ((sample - x0) / sigma_next + self._prev_derivative) / 2
            dt, sample = self._dt, self._sample
            self._prev_derivative, self._dt, self._sample = None, None, None
        return sample + derivative * dt
