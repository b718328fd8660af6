"""The image result (uint8 HWC, PNG writing) and the per-row seed rule; no model needed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_sdk.errors import UsageError
from edge_sdk.pipelines.result import GenerationResult, to_uint8
from edge_sdk.pipelines.seeds import RowNoise
from edge_sdk.samplers import randn


def test_to_uint8_maps_the_range_rounds_and_clips():
    x = np.array([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0], np.float32).reshape(1, 1, 1, 6)
    got = to_uint8(np.repeat(x, 3, axis=1))
    assert got.shape == (1, 1, 6, 3) and got.dtype == np.uint8
    # (v + 1) / 2 * 255, rounded: 0 -> 127.5 -> 128 (round half to even gives 128)
    assert got[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255, 255]
    assert to_uint8(np.full((1, 1, 1, 1), 0.5, np.float32), (0.0, 1.0))[0, 0, 0, 0] == 128


def test_save_writes_one_png_or_a_grid(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    one = GenerationResult(imgs[:1], np.zeros(1), None)
    path = one.save(tmp_path / "one.png")
    np.testing.assert_array_equal(cv2.imread(str(path))[..., ::-1], imgs[0])  # RGB kept through BGR OpenCV
    many = GenerationResult(imgs, np.zeros(1), None)
    g = cv2.imread(str(many.save(tmp_path / "grid.png", cols=3)))[..., ::-1]
    assert g.shape == (2 + 5 + 2, 2 + 3 * (7 + 2), 3)
    np.testing.assert_array_equal(g[2:7, 2 + 9:2 + 9 + 7], imgs[1])
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind
    with pytest.raises(UsageError, match="must end in .png"):
        one.save(tmp_path / "x.jpg")
    with pytest.raises(UsageError, match="does not exist"):
        one.save(tmp_path / "missing" / "x.png")


def test_row_k_of_a_batch_is_seed_plus_k_alone():
    rows = RowNoise(41, 3)
    first, second = rows.draw((2, 4, 4)), rows.draw((2, 4, 4))
    for k in range(3):
        np.testing.assert_array_equal(first[k:k + 1], randn(41 + k, (1, 2, 4, 4)))  # the samplers' rule for one row
        alone = RowNoise(41 + k, 1)
        alone.draw((2, 4, 4))
        np.testing.assert_array_equal(second[k:k + 1], alone.draw((2, 4, 4)))  # later draws continue the stream
    assert rows.seeds == [41, 42, 43]
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3"])
def test_bad_seeds_are_usage_errors(seed):
    with pytest.raises(UsageError, match="seed"):
        RowNoise(seed, 1)
