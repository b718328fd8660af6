"""Tiled VAE decoding: decode memory grows with the tile, not with the image.

The latent is cut into square tiles of ``tile`` cells that overlap by at least ``overlap`` cells;
each tile is decoded on its own (batch 1) and written into the output with a weight that ramps
linearly from ~0 to 1 across the overlap, so neighbouring tiles cross-fade instead of meeting at
a hard edge. Each output pixel is the weighted mean of the tiles covering it (the weights are
normalised, so edges and shifted last tiles need no special case). Tiles are spread evenly over
the image, so every overlap is at least the nominal one and the last tile ends at the border.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from edge_sdk.errors import InferenceError, UsageError


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` cells covering ``size`` cells with >= ``overlap`` shared."""
    if size <= tile:
        return [0]
    n = math.ceil((size - overlap) / (tile - overlap))
    return sorted({int(round(s)) for s in np.linspace(0, size - tile, n)})


def _axis_weights(starts: list[int], tile: int, down: int) -> list[np.ndarray]:
    """Per-tile 1-D blend weights in pixels: a linear ramp over each overlap with a neighbour."""
    out = []
    n_px = tile * down
    for i, s in enumerate(starts):
        w = np.ones(n_px, dtype=np.float32)
        if i > 0:
            r = (starts[i - 1] + tile - s) * down  # pixels shared with the previous tile
            if r > 0:
                w[:r] = np.minimum(w[:r], (np.arange(r, dtype=np.float32) + 0.5) / r)
        if i + 1 < len(starts):
            r = (s + tile - starts[i + 1]) * down  # pixels shared with the next tile
            if r > 0:
                w[n_px - r:] = np.minimum(w[n_px - r:], (np.arange(r, 0, -1, dtype=np.float32) - 0.5) / r)
        out.append(w)
    return out


def decode_tiled(run_fn: Callable[[np.ndarray], np.ndarray], z: np.ndarray, tile: int, overlap: int,
                 downsample: int, *, check: Callable[[], None] | None = None) -> np.ndarray:
    """Decode latent ``z`` [B, C, H, W] tile by tile with ``run_fn`` (a [1, C, h, w] -> [1, c, h*d, w*d] call).

    ``tile`` and ``overlap`` are in latent cells; ``downsample`` is pixels per cell. ``check`` is
    called between tiles (the memory cap watcher uses it to stop a run between decoder calls).
    """
    if z.ndim != 4:
        raise UsageError(f"tiled decoding needs a [batch, channels, height, width] latent, got shape {z.shape}")
    if tile < 1 or downsample < 1:
        raise UsageError(f"tile ({tile}) and downsample ({downsample}) must be at least 1")
    if not 0 <= overlap < tile:
        raise UsageError(f"tile overlap {overlap} must be in 0..{tile - 1} (tile {tile})",
                         hint="a quarter of the tile is a good overlap")
    if check is None:
        from edge_sdk.measure.memory import check_cap as check
    b, _, h, w = z.shape
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, min(overlap, th - 1)), tile_starts(w, tw, min(overlap, tw - 1))
    wy, wx = _axis_weights(ys, th, downsample), _axis_weights(xs, tw, downsample)
    out: np.ndarray | None = None
    weight = np.zeros((h * downsample, w * downsample), dtype=np.float32)
    for bi in range(b):
        for iy, y in enumerate(ys):
            for ix, x in enumerate(xs):
                piece = np.asarray(run_fn(np.ascontiguousarray(z[bi:bi + 1, :, y:y + th, x:x + tw])))
                want = (th * downsample, tw * downsample)
                if piece.ndim != 4 or piece.shape[0] != 1 or piece.shape[2:] != want:
                    raise InferenceError(
                        f"the decoder turned a {th}x{tw} latent tile into shape {piece.shape}; "
                        f"expected [1, channels, {want[0]}, {want[1]}]",
                        hint="the bundle's model.vae_downsample may be wrong for this decoder")
                if out is None:
                    out = np.zeros((b, piece.shape[1], h * downsample, w * downsample), dtype=np.float32)
                py, px = y * downsample, x * downsample
                wt = wy[iy][:, None] * wx[ix][None, :]
                out[bi, :, py:py + want[0], px:px + want[1]] += piece[0] * wt
                if bi == 0:
                    weight[py:py + want[0], px:px + want[1]] += wt
                check()
    assert out is not None  # b >= 1 and at least one tile
    out /= weight
    return out
