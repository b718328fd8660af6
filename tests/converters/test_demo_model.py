"""The shipped demo model: weights load, shapes and sizes hold, quality figure reproduces."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from edge_sdk.converters import demo
from edge_sdk.converters.demo.model import count_parameters
from edge_sdk.errors import ModelSourceError

REPO = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = REPO / "examples" / "demo_model" / "train.py"


@pytest.fixture(scope="module")
def modules() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return demo.load_demo_modules()


def _train_script():
    spec = importlib.util.spec_from_file_location("demo_train_script", TRAIN_SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _card_percent(label: str) -> float:
    text = demo.MODEL_CARD.read_text()
    m = re.search(rf"{label}:?\*?\*?:? ?\*?\*?([0-9.]+)%", text)
    assert m, f"{label} figure missing from {demo.MODEL_CARD}"
    return float(m.group(1)) / 100


def test_weights_are_small_safetensors_matching_the_architecture(modules):
    total = sum(p.stat().st_size for p in demo.WEIGHT_FILES.values())
    # "A few MB in all": float32 weights of ~1.2M parameters.
    assert 1_000_000 < total < 6_000_000
    fresh = demo.build_demo_modules()
    for name, module in modules.items():
        assert count_parameters(module) == count_parameters(fresh[name]) > 10_000
        assert not module.training
    # Every stored tensor is used (load_state_dict(strict=True) also passed).
    for name, path in demo.WEIGHT_FILES.items():
        with safe_open(str(path), framework="pt") as f:
            assert set(f.keys()) == set(modules[name].state_dict())


def test_scaling_factor_constant_matches_the_weights_metadata():
    for name in ("vae_encoder", "vae_decoder", "denoiser"):
        with safe_open(str(demo.WEIGHT_FILES[name]), framework="pt") as f:
            assert float(f.metadata()["scaling_factor"]) == demo.SCALING_FACTOR
    assert 0.05 < demo.SCALING_FACTOR < 20.0


@torch.no_grad()
def test_module_shapes_at_training_size_and_on_a_larger_canvas(modules):
    enc, dec, den, clf = (modules[k] for k in ("vae_encoder", "vae_decoder", "denoiser", "classifier"))
    for h, w in [(demo.IMAGE_SIZE, demo.IMAGE_SIZE), (48, 72)]:
        image = torch.rand(2, 3, h, w) * 2 - 1
        latent = enc(image)
        assert latent.shape == (2, demo.LATENT_CHANNELS, h // 4, w // 4)
        out = dec(latent)
        assert out.shape == (2, 3, h, w)
        assert float(out.abs().max()) <= 1.0
        noise = den(latent, torch.tensor([999.0, 10.0]), torch.tensor([3, demo.NULL_CLASS]))
        assert noise.shape == latent.shape and torch.isfinite(noise).all()
        assert clf(image).shape == (2, demo.NUM_CLASSES)


@torch.no_grad()
def test_class_label_changes_the_prediction(modules):
    """The class embedding is live: digit 0, digit 7 and the null class predict differently."""
    den = modules["denoiser"]
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).repeat(3, 1, 1, 1)
    out = den(x, torch.full((3,), 500.0), torch.tensor([0, 7, demo.NULL_CLASS]))
    assert float((out[0] - out[1]).norm()) > 1e-2 * float(out[0].norm())
    assert float((out[0] - out[2]).norm()) > 1e-2 * float(out[0].norm())


@torch.no_grad()
def test_vae_and_classifier_on_held_out_real_digits(modules):
    train = _train_script()
    _, _, test_masks, test_labels = train.digit_masks(seed=0)
    images = train.tint(test_masks, torch.Generator().manual_seed(1))
    recon = modules["vae_decoder"](modules["vae_encoder"](images))
    psnr = 10 * np.log10(4.0 / float(torch.mean((recon - images) ** 2)))
    # Card figures were measured on these very images; 0.5 dB / 1 point allow for CPU kernels
    # that sum in another order on another machine.
    assert psnr > 24.0
    acc = float((modules["classifier"](images).argmax(1) == test_labels).float().mean())
    assert acc >= 0.95
    assert acc == pytest.approx(_card_percent("Classifier accuracy on the held-out real images"), abs=0.01)


def test_missing_or_corrupt_weights_raise_a_clear_error(tmp_path, monkeypatch):
    missing = tmp_path / "denoiser.safetensors"
    monkeypatch.setitem(demo.WEIGHT_FILES, "denoiser", missing)
    with pytest.raises(ModelSourceError, match=r"denoiser\.safetensors are missing.*train\.py"):
        demo.load_demo_modules()
    missing.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelSourceError, match="cannot be read"):
        demo.load_demo_modules()
    # A valid file for another module: wrong tensors for the denoiser.
    monkeypatch.setitem(demo.WEIGHT_FILES, "denoiser", demo.WEIGHTS_DIR / "classifier.safetensors")
    with pytest.raises(ModelSourceError, match="do not fit the denoiser architecture"):
        demo.load_demo_modules()


@pytest.mark.slow
def test_generation_accuracy_reproduces_the_model_card(modules):
    from edge_sdk.converters.demo.reference_sampling import class_accuracy

    acc, images, labels = class_accuracy(modules, demo.SCALING_FACTOR, samples_per_class=20, seed=0)
    assert images.shape == (200, 3, 32, 32) and labels.shape == (200,)
    assert acc >= 0.9
    # Same seed, same sampler: the card's figure, give or take one image of 200 for float
    # round-off that can flip a borderline classification on another CPU.
    assert acc == pytest.approx(_card_percent("Generation accuracy"), abs=0.0051)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino", "litert"])
def test_every_module_converts_and_matches_torch(modules, fmt, tmp_path):
    """Each module exports to the format and matches torch within rel L2 1e-4 (float32
    kernels differ only in summation order; measured ~1e-6)."""
    example = {
        "vae_encoder": (torch.rand(1, 3, 32, 32) * 2 - 1,),
        "vae_decoder": (torch.randn(1, 4, 8, 8),),
        "denoiser": (torch.randn(2, 4, 8, 8), torch.tensor([999.0, 10.0]), torch.tensor([3, 10])),
        "classifier": (torch.rand(1, 3, 32, 32) * 2 - 1,),
    }
    for name, args in example.items():
        module = modules[name]
        with torch.no_grad():
            ref = module(*args).numpy()
        feeds = [a.numpy() for a in args]
        if fmt == "onnx":
            import onnxruntime as ort

            path = tmp_path / f"{name}.onnx"
            torch.onnx.export(module, args, str(path), dynamo=True)
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            out = sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), feeds, strict=False)})[0]
        elif fmt == "openvino":
            import openvino as ov

            compiled = ov.Core().compile_model(
                ov.convert_model(module, example_input=args),
                "CPU",
                # bf16 is the default on CPUs with AVX512-BF16; fp32 is what is compared here.
                {"INFERENCE_PRECISION_HINT": "f32"},
            )
            out = compiled(feeds)[0]
        else:
            import litert_torch

            edge = litert_torch.convert(module, args)
            # LiteRT downcasts int64 inputs to int32 unless converted with enable_x64.
            out = np.asarray(edge(*[a.astype(np.int32) if a.dtype == np.int64 else a for a in feeds]))
        rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
        assert rel < 1e-4, f"{name} via {fmt}: rel L2 {rel:.2e}"
