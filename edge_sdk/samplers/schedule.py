"""Noise-schedule helpers shared by the samplers: betas, alphas, sigmas, spacing, zero-SNR, Karras.

Each helper reproduces diffusers' arithmetic closely enough that a schedule built here equals the
diffusers one bit for bit where that is cheap (betas, cumulative alphas) and to float32 rounding
elsewhere: samplers are tested against diffusers at 1e-5 relative L2 and a schedule that is off
by one ulp at step 0 is still far inside that.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from edge_sdk.errors import UsageError

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
SPACINGS = ("leading", "trailing", "linspace")


def torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps, dtype=torch.float32)`` exactly.

    torch computes a float32 step and then ``start + step * i`` for the first half and
    ``end - step * (steps - 1 - i)`` for the second, with a fused multiply-add; float64
    arithmetic on the float32 operands reproduces that rounding.
    """
    if steps == 1:
        return np.array([start], dtype=np.float32)
    s32, e32 = np.float32(start), np.float32(end)
    step = np.float64((e32 - s32) / np.float32(steps - 1))
    i = np.arange(steps, dtype=np.float64)
    out = np.where(
        i < steps // 2,
        np.float64(s32) + step * i,
        np.float64(e32) - step * (steps - 1 - i),
    )
    return out.astype(np.float32)


def cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """``squaredcos_cap_v2``: betas that discretise the cosine alpha-bar of Nichol & Dhariwal."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / num_train_timesteps) / alpha_bar(i / num_train_timesteps), max_beta)
        for i in range(num_train_timesteps)
    ]
    return np.asarray(betas, dtype=np.float32)


def make_betas(
    beta_schedule: str,
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    trained_betas: Sequence[float] | None = None,
) -> np.ndarray:
    """float32 betas for one of ``BETA_SCHEDULES`` (or ``trained_betas`` verbatim)."""
    if trained_betas is not None:
        betas = np.asarray(trained_betas, dtype=np.float32)
        if betas.ndim != 1 or betas.size == 0:
            raise UsageError("trained_betas must be a non-empty list of numbers")
        return betas
    if beta_schedule == "linear":
        return torch_linspace_f32(beta_start, beta_end, num_train_timesteps)
    if beta_schedule == "scaled_linear":
        return torch_linspace_f32(beta_start**0.5, beta_end**0.5, num_train_timesteps) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        return cosine_betas(num_train_timesteps)
    raise UsageError(
        f"unknown beta_schedule {beta_schedule!r}",
        hint=f"use one of {', '.join(BETA_SCHEDULES)}",
    )


def cumprod_f32(alphas: np.ndarray) -> np.ndarray:
    """Cumulative product as torch's CPU kernel does it: a float64 accumulator, float32 out."""
    return np.cumprod(alphas.astype(np.float64)).astype(np.float32)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Rescale betas so the last timestep has zero SNR (Lin et al. 2023, algorithm 1)."""
    alphas_bar_sqrt = np.sqrt(cumprod_f32(np.float32(1.0) - betas))
    first, last = alphas_bar_sqrt[0].copy(), alphas_bar_sqrt[-1].copy()
    alphas_bar_sqrt = alphas_bar_sqrt - last
    alphas_bar_sqrt = alphas_bar_sqrt * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return (np.float32(1.0) - alphas).astype(np.float32)


def alphas_cumprod_for(
    betas: np.ndarray, rescale_betas_zero_snr: bool, *, clamp_terminal: bool
) -> np.ndarray:
    """float32 cumulative alphas; ``clamp_terminal`` sets a zero terminal SNR to 2**-24.

    The sigma-parameterised schedulers (Euler, DPM-Solver, UniPC) need a finite last sigma, so
    diffusers replaces the exact 0 with 2**-24 there; DDIM, DDPM and LCM keep the 0.
    """
    if rescale_betas_zero_snr:
        betas = rescale_zero_terminal_snr(betas)
    alphas_cumprod = cumprod_f32(np.float32(1.0) - betas)
    if rescale_betas_zero_snr and clamp_terminal:
        alphas_cumprod[-1] = 2.0**-24
    return alphas_cumprod


def sigmas_from_alphas_cumprod(alphas_cumprod: np.ndarray) -> np.ndarray:
    """Karras-style sigmas ``sqrt((1 - a) / a)``, ascending with the training timestep."""
    return (((np.float32(1.0) - alphas_cumprod) / alphas_cumprod) ** 0.5).astype(np.float32)


def check_spacing(spacing: str) -> None:
    if spacing not in SPACINGS:
        raise UsageError(
            f"unknown timestep_spacing {spacing!r}", hint=f"use one of {', '.join(SPACINGS)}"
        )


def spaced_timesteps(
    spacing: str, num_train_timesteps: int, num_steps: int, steps_offset: int = 0
) -> np.ndarray:
    """Descending timesteps as DDPM/DDIM/Euler/Heun space them (Lin et al. 2023, table 2).

    Returned as float64 so integer and fractional (linspace) values both survive; callers cast.
    """
    check_spacing(spacing)
    if spacing == "linspace":
        return np.linspace(0, num_train_timesteps - 1, num_steps)[::-1].copy()
    if spacing == "leading":
        ratio = num_train_timesteps // num_steps
        return (np.arange(0, num_steps) * ratio).round()[::-1].astype(np.float64) + steps_offset
    ratio = num_train_timesteps / num_steps
    return np.round(np.arange(num_train_timesteps, 0, -ratio)) - 1


def spaced_timesteps_multistep(
    spacing: str,
    num_train_timesteps: int,
    num_steps: int,
    steps_offset: int = 0,
    last_timestep: int | None = None,
) -> np.ndarray:
    """Descending int64 timesteps as DPM-Solver and UniPC space them (N + 1 points, last dropped)."""
    check_spacing(spacing)
    last = num_train_timesteps if last_timestep is None else last_timestep
    if spacing == "linspace":
        ts = np.linspace(0, last - 1, num_steps + 1).round()[::-1][:-1]
    elif spacing == "leading":
        ratio = last // (num_steps + 1)
        ts = (np.arange(0, num_steps + 1) * ratio).round()[::-1][:-1] + steps_offset
    else:
        ratio = num_train_timesteps / num_steps
        ts = np.arange(last, 0, -ratio).round() - 1
    return ts.copy().astype(np.int64)


def karras_sigmas(
    sigma_min: float, sigma_max: float, num_steps: int, rho: float = 7.0
) -> np.ndarray:
    """Karras et al. (2022) eq. 5: ``num_steps`` sigmas from ``sigma_max`` down to ``sigma_min``."""
    ramp = np.linspace(0, 1, num_steps)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def sigma_to_t(sigma: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """Fractional training timestep whose log-sigma interpolates to ``log(sigma)``."""
    sigma = np.asarray(sigma, dtype=np.float64)
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low_idx = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    high_idx = low_idx + 1
    low, high = log_sigmas[low_idx], log_sigmas[high_idx]
    w = np.clip((low - log_sigma) / (low - high), 0, 1)
    return ((1 - w) * low_idx + w * high_idx).reshape(sigma.shape)


def threshold_sample(x0: np.ndarray, ratio: float, max_value: float) -> np.ndarray:
    """Dynamic thresholding (Imagen): clip each row to its ``ratio`` quantile of |x0| and rescale."""
    b = x0.shape[0]
    flat = x0.reshape(b, -1)
    s = np.quantile(np.abs(flat), ratio, axis=1).astype(np.float32)
    s = np.clip(s, 1.0, max_value)[:, None]
    return (np.clip(flat, -s, s) / s).reshape(x0.shape).astype(np.float32)


def img2img_start(num_steps: int, strength: float, order: int = 1) -> int:
    """First loop index for img2img at ``strength`` (diffusers' ``get_timesteps``)."""
    if not 0.0 < strength <= 1.0:
        raise UsageError(
            f"img2img strength must be in (0, 1], got {strength}",
            hint="1.0 ignores the input image; small values keep it",
        )
    init = min(int(num_steps * strength), num_steps)
    return max(num_steps - init, 0) * order
