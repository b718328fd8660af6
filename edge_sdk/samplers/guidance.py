"""Classifier-free guidance, evaluated as one batch of two or as two calls in a row.

The math is diffusers' (``noise_uncond + scale * (noise_text - noise_uncond)`` followed by
``rescale_noise_cfg``); the evaluation order is the caller's choice: memory-capped boards run the
unconditional and conditional passes one after the other, so a batch of two never has to fit.
"""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np

from edge_sdk.errors import UsageError

# denoise(x, t, context) -> model output; context is whatever conditions the model (text
# embeddings, class labels), stacked along axis 0 like x.
DenoiseFn = Callable[[np.ndarray, float, np.ndarray], np.ndarray]
GuidanceMode = Literal["batched", "sequential"]


def check_rescale(rescale: object) -> None:
    """The one rule for guidance rescale (here, and ``GenerateRequest`` for a run): a number in [0, 1]."""
    if isinstance(rescale, bool) or not isinstance(rescale, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(rescale) <= 1.0:
        raise UsageError(f"guidance rescale must be in [0, 1], got {rescale!r}")


def apply_guidance(
    uncond: np.ndarray, cond: np.ndarray, scale: float, rescale: float = 0.0
) -> np.ndarray:
    """CFG: ``uncond + scale * (cond - uncond)``, then diffusers' guidance rescale.

    ``rescale`` in [0, 1] blends the guided output with a copy rescaled to the per-row standard
    deviation of ``cond`` (Lin et al. 2023, section 3.4), as ``rescale_noise_cfg`` does.
    """
    check_rescale(rescale)
    uncond = np.asarray(uncond, dtype=np.float32)
    cond = np.asarray(cond, dtype=np.float32)
    if uncond.shape != cond.shape:
        raise UsageError(
            f"guidance needs uncond and cond of one shape, got {uncond.shape} and {cond.shape}"
        )
    guided = uncond + np.float32(scale) * (cond - uncond)
    if rescale > 0.0:
        axes = tuple(range(1, cond.ndim))
        # ddof=1: torch.std is the unbiased estimator, and we match diffusers.
        std_cond = cond.std(axis=axes, keepdims=True, ddof=1)
        std_cfg = guided.std(axis=axes, keepdims=True, ddof=1)
        rescaled = guided * (std_cond / std_cfg)
        guided = np.float32(rescale) * rescaled + np.float32(1.0 - rescale) * guided
    return guided.astype(np.float32, copy=False)


def guided_output(
    denoise: DenoiseFn,
    x: np.ndarray,
    t: float,
    uncond_context: np.ndarray,
    cond_context: np.ndarray,
    scale: float,
    rescale: float = 0.0,
    mode: GuidanceMode = "batched",
) -> np.ndarray:
    """One guided model output for sample ``x`` at timestep ``t``.

    ``mode="batched"`` makes one call on ``concat([x, x])`` with ``concat([uncond, cond])``;
    ``mode="sequential"`` makes two calls of the original batch size (half the activation
    memory). With ``scale == 1`` guidance is the identity, so only the conditional pass runs.
    """
    if scale == 1.0:
        return np.asarray(denoise(x, t, cond_context), dtype=np.float32)
    if mode == "batched":
        n = x.shape[0]
        both = denoise(
            np.concatenate([x, x], axis=0),
            t,
            np.concatenate([uncond_context, cond_context], axis=0),
        )
        both = np.asarray(both, dtype=np.float32)
        uncond, cond = both[:n], both[n:]
    elif mode == "sequential":
        uncond = np.asarray(denoise(x, t, uncond_context), dtype=np.float32)
        cond = np.asarray(denoise(x, t, cond_context), dtype=np.float32)
    else:
        raise UsageError(
            f"unknown guidance mode {mode!r}", hint="use 'batched' or 'sequential'"
        )
    return apply_guidance(uncond, cond, scale, rescale)
