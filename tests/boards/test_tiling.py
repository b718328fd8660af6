"""Tiled VAE decoding: bounded difference from an untiled decode, no seam lines, every edge covered."""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.errors import InferenceError, UsageError
from edge_sdk.pipelines.tiling import decode_tiled, tile_starts

DOWN = 2  # the heavy bundle's VAE: two blocks, one upsampling


def _latent(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _run(rt):
    return lambda z: rt.run({"latent": z})["image"]


def _seam_ratios(tiled, full, starts, tile, axis):
    """Mean jump of the error field across each tile border, over the median jump elsewhere.

    A hard seam is a step in (tiled - untiled) at a tile border: its ratio is several times 1.
    """
    err = (tiled - full)[0]
    ax = 1 if axis == "rows" else 2
    jumps = np.abs(np.diff(err, axis=ax)).mean(axis=(0, 2) if ax == 1 else (0, 1))
    size = err.shape[ax] // DOWN
    borders = sorted({s * DOWN for s in starts if s > 0} | {(s + tile) * DOWN for s in starts if s + tile < size})
    others = np.median(np.delete(jumps, [p - 1 for p in borders]))
    return [jumps[p - 1] / others for p in borders]


@pytest.mark.parametrize("tile,overlap", [(24, 6), (32, 8)])
def test_tiled_decode_close_to_untiled_and_seamless(decoder_session, tile, overlap):
    z = _latent((1, 4, 48, 48))
    full = _run(decoder_session)(z)
    tiled = decode_tiled(_run(decoder_session), z, tile, overlap, DOWN)
    assert tiled.shape == full.shape == (1, 3, 96, 96)
    # Bound: each tile's GroupNorm sees only its own statistics and its borders its own padding,
    # so a tiled decode of a random-weight VAE differs from the untiled one; measured here: mean
    # |diff| 0.030 (24/6) and 0.022 (32/8) on an image spanning [-1, 1] with std 0.33. We allow
    # 0.045 (about 2% of the output range), and a worst pixel under 0.5.
    diff = np.abs(tiled - full)
    assert diff.mean() < 0.045, diff.mean()
    assert diff.max() < 0.5, diff.max()
    starts = tile_starts(48, tile, overlap)
    for axis in ("rows", "columns"):
        ratios = _seam_ratios(tiled, full, starts, tile, axis)
        # Measured 0.85-1.26 with blending; hard seams measure 2.8-5.2 (next test). Bound 1.6.
        assert max(ratios) < 1.6, (axis, ratios)


def test_hard_seams_are_detected_without_overlap(decoder_session):
    """The seam check can fail: with no overlap the border rows and columns stand out."""
    z = _latent((1, 4, 48, 48))
    full = _run(decoder_session)(z)
    tiled = decode_tiled(_run(decoder_session), z, 16, 0, DOWN)
    for axis in ("rows", "columns"):
        assert min(_seam_ratios(tiled, full, tile_starts(48, 16, 0), 16, axis)) > 2.0


def test_single_tile_equals_untiled_and_odd_shapes_are_covered(decoder_session):
    run = _run(decoder_session)
    z = _latent((2, 4, 20, 28), seed=1)
    full = np.concatenate([run(z[i:i + 1]) for i in range(2)])
    # A tile at least as large as the latent is one call per image: identical to untiled.
    np.testing.assert_allclose(decode_tiled(run, z, 32, 8, DOWN), full, rtol=0, atol=1e-6)
    # Non-square, not a multiple of the stride, batch 2: every output pixel is written and finite.
    tiled = decode_tiled(run, z, 12, 3, DOWN)
    assert tiled.shape == full.shape and np.isfinite(tiled).all()
    assert np.abs(tiled - full).mean() < 0.1  # small tiles on a small image: same GroupNorm effect, larger


def test_blending_is_exact_for_a_local_decoder():
    """For a decoder without cross-pixel context (nearest upsampling x a channel map), tiling is exact."""
    w = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)

    def pointwise(z):
        up = z.repeat(4, axis=2).repeat(4, axis=3)
        return np.einsum("oc,bchw->bohw", w, up)

    z = _latent((1, 4, 37, 23), seed=2)
    np.testing.assert_allclose(decode_tiled(pointwise, z, 10, 3, 4), pointwise(z), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size,tile,overlap", [(48, 24, 6), (50, 16, 4), (17, 8, 2), (8, 8, 2), (100, 64, 16)])
def test_tile_starts_cover_with_at_least_the_overlap(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0 and starts[-1] + min(tile, size) == size
    for a, b in zip(starts, starts[1:], strict=False):
        assert tile - (b - a) >= overlap  # neighbours share at least `overlap` cells


def test_bad_arguments_are_clear_errors(decoder_session):
    z = _latent((1, 4, 16, 16))
    with pytest.raises(UsageError, match="overlap 8 must be in 0..7"):
        decode_tiled(_run(decoder_session), z, 8, 8, DOWN)
    with pytest.raises(UsageError, match="latent"):
        decode_tiled(_run(decoder_session), z[0], 8, 2, DOWN)
    with pytest.raises(InferenceError, match="vae_downsample may be wrong"):
        decode_tiled(_run(decoder_session), z, 8, 2, 8)


def test_blending_is_exact_for_any_geometry():
    """Property: for a decoder without cross-pixel context, every size/tile/overlap/downsample is exact."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None)
    @given(h=st.integers(1, 40), w=st.integers(1, 40), tile=st.integers(1, 20), data=st.data(),
           down=st.sampled_from([1, 2, 8]))
    def check(h, w, tile, data, down):
        overlap = data.draw(st.integers(0, tile - 1))
        z = _latent((1, 2, h, w), seed=h * 41 + w)

        def pointwise(x):
            return np.tanh(x.repeat(down, axis=2).repeat(down, axis=3) * 1.5)

        np.testing.assert_allclose(decode_tiled(pointwise, z, tile, overlap, down), pointwise(z),
                                   rtol=1e-5, atol=1e-6)

    check()
