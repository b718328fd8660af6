"""DPM-Solver++ multistep (Lu et al. 2022): "DPM++ 2M" at the default ``solver_order=2``.

Matches diffusers' ``DPMSolverMultistepScheduler`` for ``algorithm_type`` ``dpmsolver++`` and
``sde-dpmsolver++`` (stochastic, one noise draw per step), ``solver_type`` midpoint or heun,
orders 1 to 3, Karras sigmas, ``lower_order_final`` / ``euler_at_final``, zero or ``sigma_min``
final sigma and ``lambda_min_clipped``. Coefficients are computed in float64 from the float32
sigmas (diffusers: float32), a difference far below the float32 rounding of the samples.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from edge_sdk.errors import UsageError
from edge_sdk.samplers.base import COMMON_DEFAULTS, SequentialSampler
from edge_sdk.samplers.schedule import (
    karras_sigmas,
    sigma_to_t,
    sigmas_from_alphas_cumprod,
    spaced_timesteps_multistep,
)


def alpha_sigma(sigma: float) -> tuple[float, float, float]:
    """(alpha_t, sigma_t, lambda_t) of the VP process for a VE sigma."""
    alpha_t = 1.0 / math.sqrt(sigma * sigma + 1.0)
    sigma_t = sigma * alpha_t
    return alpha_t, sigma_t, math.log(alpha_t) - math.log(sigma_t) if sigma_t > 0 else math.inf


class MultistepSampler(SequentialSampler):
    """Shared by DPM-Solver++ and UniPC: VP sigmas, model-output conversion, add_noise."""

    clamp_terminal_snr = True

    def __init__(self, config=None) -> None:
        super().__init__(config)
        order = self.config["solver_order"]
        if order not in (1, 2, 3):
            raise UsageError(f"{self.name} solver_order must be 1, 2 or 3, got {order!r}")
        if self.config["final_sigmas_type"] not in ("zero", "sigma_min"):
            raise UsageError("final_sigmas_type must be 'zero' or 'sigma_min'")
        self.sigmas = np.zeros(0, dtype=np.float32)
        self.init_noise_sigma = 1.0

    def _x0(self, model_output: np.ndarray, sample: np.ndarray, index: int) -> np.ndarray:
        alpha_t, sigma_t, _ = alpha_sigma(float(self.sigmas[index]))
        a, s = np.float32(alpha_t), np.float32(sigma_t)
        if self.prediction_type == "epsilon":
            return (sample - s * model_output) / a
        if self.prediction_type == "sample":
            return model_output
        return a * sample - s * model_output

    def _reset(self) -> None:
        super()._reset()
        self._model_outputs: list[np.ndarray | None] = [None] * self.config["solver_order"]
        self._lower_order_nums = 0

    def _push(self, converted: np.ndarray) -> None:
        self._model_outputs = self._model_outputs[1:] + [converted]

    def _add_noise(self, original, noise, index):
        alpha_t, sigma_t, _ = alpha_sigma(float(self.sigmas[index]))
        return np.float32(alpha_t) * original + np.float32(sigma_t) * noise

    def _final_sigma(self, karras_last: float | None = None) -> float:
        if self.config["final_sigmas_type"] == "zero":
            return 0.0
        if karras_last is not None:
            return karras_last
        a0 = self.alphas_cumprod[0]
        return float(((1 - a0) / a0) ** 0.5)


class DPMSolverSampler(MultistepSampler):
    name = "dpmpp_2m"
    diffusers_class = "DPMSolverMultistepScheduler"
    defaults: ClassVar[dict[str, Any]] = {
        **COMMON_DEFAULTS,
        "solver_order": 2,
        "thresholding": False,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
        "algorithm_type": "dpmsolver++",
        "solver_type": "midpoint",
        "lower_order_final": True,
        "euler_at_final": False,
        "use_karras_sigmas": False,
        "final_sigmas_type": "zero",
        "lambda_min_clipped": -math.inf,
        "variance_type": None,
    }

    def __init__(self, config=None) -> None:
        super().__init__(config)
        cfg = self.config
        if cfg["algorithm_type"] == "deis":  # diffusers maps it the same way
            cfg["algorithm_type"] = "dpmsolver++"
        if cfg["algorithm_type"] not in ("dpmsolver++", "sde-dpmsolver++"):
            raise UsageError(
                f"dpmpp_2m does not support algorithm_type {cfg['algorithm_type']!r}",
                hint="use 'dpmsolver++' or 'sde-dpmsolver++'",
            )
        if cfg["solver_type"] in ("logrho", "bh1", "bh2"):
            cfg["solver_type"] = "midpoint"
        if cfg["solver_type"] not in ("midpoint", "heun"):
            raise UsageError(f"dpmpp_2m solver_type must be 'midpoint' or 'heun', got {cfg['solver_type']!r}")
        if cfg["variance_type"] is not None:
            raise UsageError(
                "dpmpp_2m does not support learned variance (variance_type)",
                hint="use the ddpm sampler for models that predict their variance",
            )

    @property
    def needs_noise(self) -> bool:  # type: ignore[override]
        return self.config["algorithm_type"] == "sde-dpmsolver++"

    def _set_timesteps(self, num_steps: int) -> None:
        cfg = self.config
        ac = self.alphas_cumprod
        lambda_t = np.log(np.sqrt(ac)) - np.log(np.sqrt(np.float32(1.0) - ac))
        clipped = int(np.searchsorted(lambda_t[::-1], cfg["lambda_min_clipped"]))
        ts = spaced_timesteps_multistep(
            cfg["timestep_spacing"], self.num_train_timesteps, num_steps, cfg["steps_offset"],
            last_timestep=self.num_train_timesteps - clipped,
        )
        full = sigmas_from_alphas_cumprod(ac)
        log_sigmas = np.log(full)
        if cfg["use_karras_sigmas"]:
            desc = full[::-1]
            sig = karras_sigmas(float(desc[-1]), float(desc[0]), num_steps)
            ts = sigma_to_t(sig, log_sigmas)
            if cfg["beta_schedule"] != "squaredcos_cap_v2":
                ts = ts.round()
        else:
            sig = np.interp(ts, np.arange(0, len(full)), full)
        self.sigmas = np.concatenate([sig, [self._final_sigma()]]).astype(np.float32)
        self.timesteps = np.asarray(ts).astype(np.int64)

    def _step(self, model_output, index, sample, noise):
        self._check_order(index)
        cfg = self.config
        n = len(self.timesteps)
        lower_final = index == n - 1 and (
            cfg["euler_at_final"]
            or (cfg["lower_order_final"] and n < 15)
            or cfg["final_sigmas_type"] == "zero"
        )
        lower_second = index == n - 2 and cfg["lower_order_final"] and n < 15
        x0 = self._x0(model_output, sample, index)
        if cfg["thresholding"]:
            x0 = self._clip_or_threshold(x0)
        self.last_denoised = x0
        self._push(x0)
        sde = cfg["algorithm_type"] == "sde-dpmsolver++"
        eps = self._draw_noise(sample.shape, noise) if sde else None
        order = cfg["solver_order"]
        if order == 1 or self._lower_order_nums < 1 or lower_final:
            prev = self._first_order(index, sample, eps)
        elif order == 2 or self._lower_order_nums < 2 or lower_second:
            prev = self._second_order(index, sample, eps)
        else:
            prev = self._third_order(index, sample, eps)
        if self._lower_order_nums < order:
            self._lower_order_nums += 1
        return prev

    def _lambdas(self, index: int, back: int):
        """alpha, sigma, lambda for the target sigma and the ``back`` + 1 previous ones."""
        a_t, s_t, l_t = alpha_sigma(float(self.sigmas[index + 1]))
        past = [alpha_sigma(float(self.sigmas[index - k])) for k in range(back + 1)]
        return a_t, s_t, l_t, past

    def _noise_term(self, s_t: float, h: float, eps: np.ndarray | None):
        if eps is None:
            return 0.0
        return np.float32(s_t * math.sqrt(-math.expm1(-2.0 * h))) * eps

    def _first_order(self, index, sample, eps):
        a_t, s_t, l_t, past = self._lambdas(index, 0)
        _, s_s, l_s = past[0]
        h = l_t - l_s
        m0 = self._model_outputs[-1]
        if eps is None:
            return np.float32(s_t / s_s) * sample - np.float32(a_t * math.expm1(-h)) * m0
        return (
            np.float32(s_t / s_s * math.exp(-h)) * sample
            + np.float32(a_t * -math.expm1(-2.0 * h)) * m0
            + self._noise_term(s_t, h, eps)
        )

    def _second_order(self, index, sample, eps):
        a_t, s_t, l_t, past = self._lambdas(index, 1)
        (_, s_s0, l_s0), (_, _, l_s1) = past
        m0, m1 = self._model_outputs[-1], self._model_outputs[-2]
        h, h_0 = l_t - l_s0, l_s0 - l_s1
        r0 = h_0 / h
        d0, d1 = m0, np.float32(1.0 / r0) * (m0 - m1)
        heun = self.config["solver_type"] == "heun"
        if eps is None:
            c1 = a_t * math.expm1(-h)
            c2 = -a_t * (math.expm1(-h) / h + 1.0) if heun else 0.5 * c1
            return np.float32(s_t / s_s0) * sample - np.float32(c1) * d0 - np.float32(c2) * d1
        c1 = a_t * -math.expm1(-2.0 * h)
        c2 = a_t * (-math.expm1(-2.0 * h) / (-2.0 * h) + 1.0) if heun else 0.5 * c1
        return (
            np.float32(s_t / s_s0 * math.exp(-h)) * sample
            + np.float32(c1) * d0
            + np.float32(c2) * d1
            + self._noise_term(s_t, h, eps)
        )

    def _third_order(self, index, sample, eps):
        a_t, s_t, l_t, past = self._lambdas(index, 2)
        (_, s_s0, l_s0), (_, _, l_s1), (_, _, l_s2) = past
        m0, m1, m2 = self._model_outputs[-1], self._model_outputs[-2], self._model_outputs[-3]
        h, h_0, h_1 = l_t - l_s0, l_s0 - l_s1, l_s1 - l_s2
        r0, r1 = h_0 / h, h_1 / h
        d1_0 = np.float32(1.0 / r0) * (m0 - m1)
        d1_1 = np.float32(1.0 / r1) * (m1 - m2)
        d1 = d1_0 + np.float32(r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = np.float32(1.0 / (r0 + r1)) * (d1_0 - d1_1)
        if eps is None:
            em = math.expm1(-h)
            return (
                np.float32(s_t / s_s0) * sample
                - np.float32(a_t * em) * m0
                + np.float32(a_t * (em / h + 1.0)) * d1
                - np.float32(a_t * ((em + h) / h**2 - 0.5)) * d2
            )
        e2 = -math.expm1(-2.0 * h)
        return (
            np.float32(s_t / s_s0 * math.exp(-h)) * sample
            + np.float32(a_t * e2) * m0
            + np.float32(a_t * (e2 / (-2.0 * h) + 1.0)) * d1
            + np.float32(a_t * ((e2 - 2.0 * h) / (2.0 * h) ** 2 - 0.5)) * d2
            + self._noise_term(s_t, h, eps)
        )
