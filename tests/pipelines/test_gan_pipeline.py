"""One-shot GAN generation (a class-conditional DCGAN-style generator) against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edge_sdk
from edge_sdk.errors import CancelledError, MemoryCapError, UsageError
from edge_sdk.samplers import randn

# One fp32 call: ORT and torch differ by summation order only (~1e-7 on tanh outputs).
TOL = 1e-5


@pytest.fixture(scope="module")
def gen(gan_bundle):
    bundle, _ = gan_bundle
    with edge_sdk.load(bundle) as g:
        yield g


def test_gan_matches_torch_with_one_seeded_z_per_row(gen, gan_bundle, ref):
    _, module = gan_bundle
    result = gen.generate(seed=7, class_labels=[0, 2, 1])
    z = np.concatenate([randn(7 + k, (1, 16)) for k in range(3)])
    expected = ref.torch_call(module, z, np.array([0, 2, 1], np.int64))
    assert result.images.shape == (3, 16, 16, 3) and result.images.dtype == np.uint8
    np.testing.assert_allclose(result.raw, expected, atol=TOL)
    assert result.info["seeds"] == [7, 8, 9] and result.info["class_labels"] == [0, 2, 1]
    # Labels matter: the same z with another class is another image.
    other = ref.torch_call(module, z, np.array([1, 1, 1], np.int64))
    assert np.abs(other - expected).max() > 1e-2


def test_gan_batch_rows_equal_single_generations(gen):
    batch = gen.generate(seed=3, batch=4)
    for k in range(4):
        single = gen.generate(seed=3 + k, class_labels=[k % 3])
        np.testing.assert_allclose(batch.raw[k], single.raw[0], atol=TOL)


def test_fixed_batch_generator_runs_a_batch_in_slices(gen, gan_bundle, tmp_path):
    """A static-batch artifact (as NPUs need) is called once per row and gives the same images."""
    from edge_sdk.converters.sources import component_from
    from edge_sdk.converters.spec import ModelSpec

    bundle, module = gan_bundle

    comp = component_from(module, {"z": torch.randn(1, 16), "class_labels": torch.tensor([1])}, role="generator",
                          dynamic_dims={"z": {}, "class_labels": {}})
    fixed = edge_sdk.convert(ModelSpec("gan-fixed", {"generator": comp}, dict(bundle.model)), tmp_path / "f.bundle")
    assert fixed.signature("generator")[0][0].shape == (1, 16)
    with edge_sdk.load(fixed) as g:
        sliced = g.generate(seed=5, batch=3)
    np.testing.assert_allclose(sliced.raw, gen.generate(seed=5, batch=3).raw, atol=TOL)


def test_gan_callback_runs_once_and_can_cancel(gen):
    seen = []
    r = gen.generate(seed=1, callback=lambda info: seen.append((info.index, info.total, info.preview())))
    assert [(i, t) for i, t, _ in seen] == [(0, 1)]
    np.testing.assert_array_equal(seen[0][2], r.images[0])
    with pytest.raises(CancelledError):
        gen.generate(seed=1, callback=lambda info: False)


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 4}, "do not apply to a GAN"),
    ({"prompt": "a cat"}, "do not apply to a GAN"),
    ({"init_image": "x.png"}, "do not apply to a GAN"),
    ({"class_labels": [3]}, r"must be in 0\.\.2"),
    ({"seed": -2}, "seed must be"),
])
def test_gan_refuses_what_does_not_apply(gen, kwargs, match):
    with pytest.raises(UsageError, match=match):
        gen.generate(**kwargs)


@pytest.mark.parametrize("batch", [10**9, 2**40])
def test_gan_batch_beyond_memory_refused_before_drawing(gen, batch):
    """The memory governor (hardening class 7) covers one-shot generators: 10^9 images of 16x16x3 need
    ~4.6 TB of buffers alone, refused from arithmetic (z is never drawn)."""
    with pytest.raises(MemoryCapError, match=f"a batch of {batch} images needs .* GB for its buffers alone.*available"):
        gen.generate(seed=0, batch=batch)
