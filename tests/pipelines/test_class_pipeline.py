"""Pixel-space diffusion (class-conditional diffusers UNet2DModel, and the unconditional example
denoiser) against torch references; batches, seeds and per-step callbacks."""

from __future__ import annotations

import numpy as np
import pytest

import edge_sdk
from edge_sdk.errors import CancelledError, UsageError
from edge_sdk.samplers import randn

# fp32 ORT vs torch differ by summation order only (~1e-6 per call); 4 steps with guidance keep
# the final sample within a few 1e-6 (measured 6.7e-6); 1e-4 leaves margin on other CPUs, while a wrong
# label, null class or timestep moves pixels by > 1e-2 (checked below).
TOL = 1e-4
# Rows of one batched call vs separate calls: the same kernels on different batch sizes; they
# may block the sums differently, so the same bar as against torch.
BATCH_TOL = 1e-4


@pytest.fixture(scope="module")
def gen(class_bundle):
    bundle, _ = class_bundle
    with edge_sdk.load(bundle) as g:
        yield g


def class_reference(ref, module, label, *, seed, guidance, steps=4, sampler="ddim"):
    lab = np.array([label], dtype=np.int64)
    null = np.array([4], dtype=np.int64)

    def denoise(x, t):
        c = ref.torch_call(module, x, t, lab)
        return c if guidance == 1.0 else ref.cfg(ref.torch_call(module, x, t, null), c, guidance)

    return ref.reference_loop(denoise, (1, 3, 8, 8), seed=seed, sampler=sampler, steps=steps)


def test_class_conditional_with_guidance_matches_torch_reference(gen, class_bundle, ref):
    _, module = class_bundle
    result = gen.generate(class_labels=[2], steps=4, seed=4, guidance=2.5)
    x = class_reference(ref, module, 2, seed=4, guidance=2.5)
    assert result.images.shape == (1, 8, 8, 3) and result.latents is None
    np.testing.assert_allclose(result.raw, x, atol=TOL)
    assert result.info["class_labels"] == [2]
    other = class_reference(ref, module, 1, seed=4, guidance=2.5)
    assert np.abs(other - x).max() > 1e-2


def test_unconditional_example_matches_torch_reference(tiny_bundle, ref):
    from edge_sdk.converters.sources import load_entry_point

    module, _ = load_entry_point("examples/tiny_unet.py:factory")()
    with edge_sdk.load(tiny_bundle) as g:
        result = g.generate(steps=3, seed=9, sampler="euler")
    from edge_sdk.samplers import get_sampler

    s = get_sampler("euler", {})
    s.set_timesteps(3)
    x = randn(9, (1, 3, 32, 32)) * np.float32(s.init_noise_sigma)
    for i, t in enumerate(s.timesteps):
        x = s.step(ref.torch_call(module, s.scale_model_input(x, i), np.array([t], np.float32)), i, x)
    # Euler starts at sigma ~14.6, so the sample is ~15x larger than a pixel: scale the bar with it.
    np.testing.assert_allclose(result.raw, x, atol=TOL * 15)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "euler_ancestral"])
def test_batch_rows_equal_single_generations_seeded_seed_plus_row(gen, sampler):
    batch = gen.generate(class_labels=[0, 1, 3], steps=4, seed=20, guidance=2.0, sampler=sampler)
    assert batch.info["seeds"] == [20, 21, 22] and batch.images.shape[0] == 3
    for k, label in enumerate([0, 1, 3]):
        single = gen.generate(class_labels=[label], steps=4, seed=20 + k, guidance=2.0, sampler=sampler)
        np.testing.assert_allclose(batch.raw[k], single.raw[0], atol=BATCH_TOL)
    # Stochastic samplers draw fresh noise per step, from the row's own generator.
    again = gen.generate(class_labels=[0, 1, 3], steps=4, seed=20, guidance=2.0, sampler=sampler)
    np.testing.assert_array_equal(again.images, batch.images)


def test_default_labels_cycle_through_classes(gen):
    r = gen.generate(batch=6, steps=2, seed=0)
    assert r.info["class_labels"] == [0, 1, 2, 3, 0, 1]


def test_callback_reports_every_step_and_previews(gen):
    seen = []

    def cb(info):
        seen.append((info.index, info.total, info.preview()))

    result = gen.generate(class_labels=[1], steps=5, seed=3, sampler="ddim", callback=cb)
    assert [s[0] for s in seen] == [0, 1, 2, 3, 4] and {s[1] for s in seen} == {5}
    for _, _, img in seen:
        assert img.dtype == np.uint8 and img.shape == (8, 8, 3)
    # DDIM's last step returns its x0 estimate, so the last preview is the final image.
    np.testing.assert_array_equal(seen[-1][2], result.images[0])
    # The first estimate is far from the final image: previews do follow the sampling.
    assert np.abs(seen[0][2].astype(int) - result.images[0]).max() > 10


def test_batch_preview_is_one_grid_image(gen):
    shapes = []
    gen.generate(batch=4, steps=2, seed=0, callback=lambda info: shapes.append(info.preview().shape))
    assert shapes == [(2 + 2 * 10, 2 + 2 * 10, 3)] * 2  # 2x2 grid of 8x8 images with 2-pixel gaps


def test_returning_false_cancels_with_the_step(gen):
    calls = []

    def stop_after_two(info):
        calls.append(info.index)
        return info.index < 1

    with pytest.raises(CancelledError) as err:
        gen.generate(class_labels=[1], steps=5, seed=3, callback=stop_after_two)
    assert err.value.step == 2 and calls == [0, 1]
    assert "after step 2/5" in str(err.value)

    def raise_cancel(info):
        raise CancelledError("user pressed stop")

    with pytest.raises(CancelledError) as err:
        gen.generate(class_labels=[1], steps=5, seed=3, callback=raise_cancel)
    assert err.value.step == 1
    # The generator stays usable after a cancel.
    assert gen.generate(class_labels=[1], steps=2, seed=3).images.shape == (1, 8, 8, 3)


@pytest.mark.parametrize("kwargs, match", [
    ({"class_labels": [4]}, r"must be in 0\.\.3"),
    ({"class_labels": [0, 1], "batch": 3}, "2 class labels for a batch of 3"),
    ({"class_labels": [0.5]}, "must be integers"),
    ({"steps": 0}, "steps must be a positive integer"),
    ({"seed": -1}, "seed must be a non-negative integer"),
    ({"height": 6, "width": 8}, "height 6 does not fit"),
    ({"prompt": "a cat"}, "not text-conditioned"),
    ({"guidance": -1.0}, "guidance must be"),
    ({"sampler": "nope"}, "unknown sampler"),
    ({"strength": 0.5}, "strength applies to img2img only"),
])
def test_bad_arguments_are_usage_errors(gen, kwargs, match):
    with pytest.raises(UsageError, match=match):
        gen.generate(steps=kwargs.pop("steps", 2), **kwargs)


def test_guidance_on_an_unconditional_model_is_refused(tiny_bundle):
    with edge_sdk.load(tiny_bundle) as g, pytest.raises(UsageError, match="unconditional"):
        g.generate(steps=2, guidance=3.0)


def test_a_fixed_size_denoiser_refuses_other_sizes(gen):
    # The class bundle was exported with only the batch axis dynamic.
    with pytest.raises(UsageError, match="fixed size of 8x8 cells"):
        gen.generate(class_labels=[0], steps=2, height=16, width=8)


def test_a_dynamic_size_denoiser_makes_other_sizes(tiny_bundle):
    with edge_sdk.load(tiny_bundle) as g:
        assert g.generate(steps=2, height=16, width=24).images.shape == (1, 16, 24, 3)
