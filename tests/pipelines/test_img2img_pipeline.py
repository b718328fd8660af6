"""img2img: an init image read with OpenCV, encoded by the bundle's VAE encoder (latent models) or
used as is (pixel models), noised to the strength's timestep and denoised from there."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import edge_sdk
from edge_sdk.errors import UsageError

pytestmark = pytest.mark.slow  # the text model, converted once per session (~30 s of torch.onnx export)

# Same reasoning as the txt2img tests: fp32 ORT vs torch differ by ~1e-6 per call; the encoder adds
# one more call. A wrong scale factor or start index changes the image by > 1e-2 (checked).
TOL = 1e-4


def gradient_image(h: int, w: int) -> np.ndarray:
    """HWC uint8 RGB: red across, green down, constant blue (asymmetric, so a BGR/RGB mix-up shows)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 40)], -1).astype(np.uint8)


@pytest.fixture(scope="module")
def init_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("img2img") / "init.png"
    cv2.imwrite(str(path), gradient_image(16, 16)[..., ::-1])  # OpenCV writes BGR
    return path


@pytest.fixture(scope="module")
def gen(text_bundle):
    bundle, _ = text_bundle
    with edge_sdk.load(bundle) as g:
        yield g


def reference(ref, modules, tokenize_ids, init_rgb, *, prompt, seed, strength, steps, guidance):
    x = init_rgb.astype(np.float32).transpose(2, 0, 1)[None] / 255.0 * 2 - 1
    x0 = ref.torch_call(modules["encoder"], x) * np.float32(ref.LATENT_SCALE)
    c = ref.torch_call(modules["text_encoder"], tokenize_ids(prompt))
    u = ref.torch_call(modules["text_encoder"], tokenize_ids(""))

    def denoise(z, t):
        return ref.cfg(ref.torch_call(modules["denoiser"], z, t, u), ref.torch_call(modules["denoiser"], z, t, c),
                       guidance)

    z = ref.reference_loop(denoise, (1, 4, 8, 8), seed=seed, sampler="ddim", steps=steps, x0=x0, strength=strength)
    return ref.torch_call(modules["decoder"], z / ref.LATENT_SCALE)


@pytest.fixture(scope="module")
def tokenize_ids(tokenizer_path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    return lambda p: np.array([tok.encode(p).ids], dtype=np.int64)


def test_img2img_matches_torch_reference(gen, text_bundle, init_png, tokenize_ids, ref):
    _, modules = text_bundle
    steps_seen = []
    result = gen.generate(prompt="a red cat", init_image=init_png, strength=0.6, steps=5, seed=2, guidance=2.0,
                          callback=lambda info: steps_seen.append((info.index, info.total)))
    expected = reference(ref, modules, tokenize_ids, gradient_image(16, 16), prompt="a red cat", seed=2,
                         strength=0.6, steps=5, guidance=2.0)
    np.testing.assert_allclose(result.raw, expected, atol=TOL)
    # strength 0.6 of 5 steps runs the last 3 (diffusers' rule), and the callback counts those.
    assert steps_seen == [(0, 3), (1, 3), (2, 3)] and result.info["steps_run"] == 3
    # The encoder really was used: a BGR-swapped init image gives another result.
    swapped = reference(ref, modules, tokenize_ids, gradient_image(16, 16)[..., ::-1], prompt="a red cat", seed=2,
                        strength=0.6, steps=5, guidance=2.0)
    assert np.abs(swapped - expected).max() > 1e-2


def test_array_input_and_resizing(gen, init_png):
    by_file = gen.generate(prompt="a dog", init_image=init_png, strength=0.5, steps=4, seed=1)
    by_array = gen.generate(prompt="a dog", init_image=gradient_image(16, 16), strength=0.5, steps=4, seed=1)
    np.testing.assert_array_equal(by_file.images, by_array.images)
    # A 32x32 image with an explicit 16x16 size is shrunk first (area averaging).
    big = cv2.resize(gradient_image(16, 16), (32, 32), interpolation=cv2.INTER_NEAREST)
    shrunk = gen.generate(prompt="a dog", init_image=big, strength=0.5, steps=4, seed=1, height=16, width=16)
    np.testing.assert_allclose(shrunk.raw, by_file.raw, atol=TOL)


def test_pixel_model_img2img_keeps_the_image_at_low_strength(class_bundle):
    bundle, _ = class_bundle
    init = gradient_image(8, 8)
    with edge_sdk.load(bundle) as g:
        low = g.generate(class_labels=[1], init_image=init, strength=0.1, steps=10, seed=0)
        high = g.generate(class_labels=[1], init_image=init, strength=1.0, steps=10, seed=0)
    err = {k: float(np.abs(r.images[0].astype(int) - init).mean()) for k, r in (("low", low), ("high", high))}
    # One step of noise at t~100 on an untrained model keeps most of the image; strength 1 forgets it.
    assert err["low"] < 20 < err["high"], err


@pytest.mark.parametrize("kwargs, match", [
    ({"init_image": "/nonexistent/x.png"}, "does not exist"),
    ({"strength": 0.0}, "strength must be in"),
    ({"strength": 1.5}, "strength must be in"),
    ({"init_image": np.zeros((15, 16, 3), np.uint8)}, "init image is 16x15"),
    ({"init_image": np.zeros((16, 16, 3), np.float32)}, "must be HxWxC uint8"),
    ({"strength": 0.01}, "leaves no step to run"),
])
def test_bad_img2img_input_is_a_usage_error(gen, init_png, kwargs, match):
    args = {"prompt": "a cat", "steps": 4, "init_image": init_png, **kwargs}
    with pytest.raises(UsageError, match=match):
        gen.generate(**args)


def test_undecodable_file_is_a_usage_error(gen, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(UsageError, match="not a PNG, JPEG, BMP or WebP file"):
        gen.generate(prompt="a cat", steps=4, init_image=bad)


def test_img2img_needs_an_encoder_for_latent_models(text_bundle, tmp_path):
    """A bundle converted without its encoder says so instead of failing inside a runtime."""
    import shutil

    bundle, _ = text_bundle
    # Rebuild the manifest without the encoder component (its files stay, unlisted).
    import json

    copy = tmp_path / "noenc.bundle"
    shutil.copytree(bundle.root, copy)
    data = json.loads((copy / "manifest.json").read_text())
    del data["components"]["encoder"]
    shutil.rmtree(copy / "encoder")
    (copy / "manifest.json").write_text(json.dumps(data))
    with edge_sdk.load(copy) as g, pytest.raises(UsageError, match="no VAE encoder"):
        g.generate(prompt="a cat", steps=4, init_image=gradient_image(16, 16))
