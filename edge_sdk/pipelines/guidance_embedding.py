"""The guidance-scale embedding an LCM-distilled UNet takes as ``timestep_cond``.

Guidance is distilled into such a UNet: the scale goes in as a sinusoidal embedding (Luo et al.
2023, as diffusers' ``get_guidance_scale_embedding``) and classifier-free guidance is off. The
pipeline embeds ``guidance - 1``, as LatentConsistencyModelPipeline does.
"""

from __future__ import annotations

import numpy as np


def guidance_scale_embedding(scale: float, dim: int, batch: int) -> np.ndarray:
    """(batch, dim) float32: sin/cos of ``(scale - 1) * 1000`` at ``dim // 2`` log-spaced frequencies."""
    w = np.float32((scale - 1.0) * 1000.0)
    half = dim // 2
    freq = np.exp(np.arange(half, dtype=np.float32) * -np.float32(np.log(np.float32(10000.0)) / (half - 1)))
    emb = w * freq
    row = np.concatenate([np.sin(emb), np.cos(emb)]).astype(np.float32)
    if dim % 2:
        row = np.concatenate([row, np.zeros(1, dtype=np.float32)])
    return np.tile(row[None], (batch, 1))
