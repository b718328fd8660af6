"""UniPC (Zhao et al. 2023): a multistep predictor with a corrector that reuses the next model
call, so it costs one model call per step like DPM-Solver++.

Matches diffusers' ``UniPCMultistepScheduler`` (bh1/bh2, ``predict_x0``, orders 1 to 3,
``lower_order_final``, ``disable_corrector``, Karras sigmas, zero or ``sigma_min`` final sigma).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from edge_sdk.errors import UsageError
from edge_sdk.samplers.base import COMMON_DEFAULTS
from edge_sdk.samplers.dpm_solver import MultistepSampler, alpha_sigma
from edge_sdk.samplers.schedule import (
    karras_sigmas,
    sigma_to_t,
    sigmas_from_alphas_cumprod,
    spaced_timesteps_multistep,
)


class UniPCSampler(MultistepSampler):
    name = "unipc"
    diffusers_class = "UniPCMultistepScheduler"
    defaults: ClassVar[dict[str, Any]] = {
        **COMMON_DEFAULTS,
        "solver_order": 2,
        "thresholding": False,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
        "predict_x0": True,
        "solver_type": "bh2",
        "lower_order_final": True,
        "disable_corrector": [],
        "use_karras_sigmas": False,
        "final_sigmas_type": "zero",
        "sigma_min": None,
        "sigma_max": None,
    }

    def __init__(self, config=None) -> None:
        super().__init__(config)
        cfg = self.config
        if cfg["solver_type"] in ("midpoint", "heun", "logrho"):
            cfg["solver_type"] = "bh2"  # diffusers maps DPM-Solver names the same way
        if cfg["solver_type"] not in ("bh1", "bh2"):
            raise UsageError(f"unipc solver_type must be 'bh1' or 'bh2', got {cfg['solver_type']!r}")
        self.predict_x0 = bool(cfg["predict_x0"])
        if not self.predict_x0 and cfg["final_sigmas_type"] == "zero":
            # The noise-prediction form divides by sigma at the last step: diffusers returns NaN.
            raise UsageError(
                "unipc with predict_x0=False cannot step to a zero final sigma",
                hint="set final_sigmas_type='sigma_min' or predict_x0=True",
            )
        if cfg["use_karras_sigmas"] and cfg["final_sigmas_type"] == "sigma_min":
            # The Karras ramp already ends at sigma_min, so the last step would have h = 0.
            raise UsageError(
                "unipc with use_karras_sigmas repeats sigma_min when final_sigmas_type='sigma_min'",
                hint="use final_sigmas_type='zero' with Karras sigmas",
            )
        self.disable_corrector = {int(i) for i in (cfg["disable_corrector"] or [])}

    def _set_timesteps(self, num_steps: int) -> None:
        cfg = self.config
        ts = spaced_timesteps_multistep(
            cfg["timestep_spacing"], self.num_train_timesteps, num_steps, cfg["steps_offset"]
        )
        full = sigmas_from_alphas_cumprod(self.alphas_cumprod)
        if cfg["use_karras_sigmas"]:
            desc = full[::-1]
            smin = float(desc[-1]) if cfg["sigma_min"] is None else float(cfg["sigma_min"])
            smax = float(desc[0]) if cfg["sigma_max"] is None else float(cfg["sigma_max"])
            sig = karras_sigmas(smin, smax, num_steps)
            ts = sigma_to_t(sig, np.log(full)).round()
            last = self._final_sigma(karras_last=float(sig[-1]))
        else:
            sig = np.interp(ts, np.arange(0, len(full)), full)
            last = self._final_sigma()
        self.sigmas = np.concatenate([sig, [last]]).astype(np.float32)
        self.timesteps = np.asarray(ts).astype(np.int64)

    def _reset(self) -> None:
        super()._reset()
        self._last_sample: np.ndarray | None = None
        self._this_order = 1

    def _convert(self, model_output, sample, index):
        x0 = self._x0(model_output, sample, index)
        if self.predict_x0:
            if self.config["thresholding"]:
                x0 = self._clip_or_threshold(x0)
            return x0, x0
        alpha_t, sigma_t, _ = alpha_sigma(float(self.sigmas[index]))
        a, s = np.float32(alpha_t), np.float32(sigma_t)
        if self.prediction_type == "epsilon":
            eps = model_output
        elif self.prediction_type == "sample":
            eps = (sample - a * model_output) / s
        else:
            eps = a * model_output + s * sample
        return eps, x0

    def _step(self, model_output, index, sample, noise):
        self._check_order(index)
        cfg = self.config
        use_corrector = (
            index > 0 and (index - 1) not in self.disable_corrector and self._last_sample is not None
        )
        converted, x0 = self._convert(model_output, sample, index)
        self.last_denoised = x0
        if use_corrector:
            sample = self._corrector(converted, index, self._last_sample, sample, self._this_order)
        self._push(converted)
        order = cfg["solver_order"]
        this_order = min(order, len(self.timesteps) - index) if cfg["lower_order_final"] else order
        self._this_order = min(this_order, self._lower_order_nums + 1)
        self._last_sample = sample
        prev = self._predictor(index, sample, self._this_order)
        if self._lower_order_nums < order:
            self._lower_order_nums += 1
        return prev

    def _coefficients(self, h: float, rks: list[float], order: int):
        """(hh, h_phi_1, B_h, R, b) of the UniPC update (the paper's eq. 9 / B(h))."""
        hh = -h if self.predict_x0 else h
        h_phi_1 = math.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1.0
        b_h = hh if self.config["solver_type"] == "bh1" else math.expm1(hh)
        r_rows, b = [], []
        rk = np.asarray(rks + [1.0], dtype=np.float64)
        factorial_i = 1
        for i in range(1, order + 1):
            r_rows.append(rk ** (i - 1))
            b.append(h_phi_k * factorial_i / b_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1.0 / factorial_i
        return hh, h_phi_1, b_h, np.stack(r_rows), np.asarray(b)

    def _base_update(self, x, a_t, s_t, a_s0, s_s0, h_phi_1, m0):
        if self.predict_x0:
            return np.float32(s_t / s_s0) * x - np.float32(a_t * h_phi_1) * m0, a_t
        return np.float32(a_t / a_s0) * x - np.float32(s_t * h_phi_1) * m0, s_t

    def _predictor(self, index: int, x: np.ndarray, order: int) -> np.ndarray:
        outs = self._model_outputs
        m0 = outs[-1]
        a_t, s_t, l_t = alpha_sigma(float(self.sigmas[index + 1]))
        a_s0, s_s0, l_s0 = alpha_sigma(float(self.sigmas[index]))
        h = l_t - l_s0
        rks, d1s = [], []
        for k in range(1, order):
            _, _, l_si = alpha_sigma(float(self.sigmas[index - k]))
            rk = (l_si - l_s0) / h
            rks.append(rk)
            d1s.append((outs[-(k + 1)] - m0) / np.float32(rk))
        _, h_phi_1, b_h, r, b = self._coefficients(h, rks, order)
        x_t, scale = self._base_update(x, a_t, s_t, a_s0, s_s0, h_phi_1, m0)
        if d1s:
            rhos = np.array([0.5]) if order == 2 else np.linalg.solve(r[:-1, :-1], b[:-1])
            pred_res = sum(np.float32(rho) * d for rho, d in zip(rhos, d1s, strict=False))
            x_t = x_t - np.float32(scale * b_h) * pred_res
        return x_t

    def _corrector(self, model_t, index, last_sample, this_sample, order):
        outs = self._model_outputs
        m0 = outs[-1]
        a_t, s_t, l_t = alpha_sigma(float(self.sigmas[index]))
        a_s0, s_s0, l_s0 = alpha_sigma(float(self.sigmas[index - 1]))
        h = l_t - l_s0
        rks, d1s = [], []
        for k in range(1, order):
            _, _, l_si = alpha_sigma(float(self.sigmas[index - (k + 1)]))
            rk = (l_si - l_s0) / h
            rks.append(rk)
            d1s.append((outs[-(k + 1)] - m0) / np.float32(rk))
        _, h_phi_1, b_h, r, b = self._coefficients(h, rks, order)
        rhos = np.array([0.5]) if order == 1 else np.linalg.solve(r, b)
        x_t, scale = self._base_update(last_sample, a_t, s_t, a_s0, s_s0, h_phi_1, m0)
        corr = np.float32(rhos[-1]) * (model_t - m0)
        for rho, d in zip(rhos[:-1], d1s, strict=False):
            corr = corr + np.float32(rho) * d
        return x_t - np.float32(scale * b_h) * corr
