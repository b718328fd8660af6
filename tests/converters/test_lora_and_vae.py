"""LoRA at convert time and a swapped-in decoder, in one convert (they are independent options):

- a LoRA built with PEFT/diffusers' own APIs at test dimensions, saved with save_lora_weights, fused
  by ``--lora FILE:SCALE``: the exported ONNX UNet equals diffusers' own pipeline.load_lora_weights +
  fuse_lora result, and the manifest records file, sha256 and scale;
- ``--vae`` with an AutoencoderTiny (TAESD family) folder: its decoder is exported and the bundle
  generates through the device pipeline with it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_sdk.converters.lora import LoraRef
from edge_sdk.errors import ModelSourceError, UsageError


def _make_lora(arch, out: Path) -> Path:
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = arch.unet_cond()
    torch.manual_seed(1)
    # init_lora_weights=False: random A and B, so the LoRA changes the output (a zero B would not).
    unet.add_adapter(LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(str(out), unet_lora_layers=layers, safe_serialization=True)
    return out / "pytorch_lora_weights.safetensors"


def test_lora_argument_parsing(tmp_path):
    assert LoraRef.parse("a/b.safetensors") == LoraRef(Path("a/b.safetensors"), 1.0)
    assert LoraRef.parse("a/b.safetensors:0.5") == LoraRef(Path("a/b.safetensors"), 0.5)
    assert LoraRef.parse("C:/x/lcm.safetensors") == LoraRef(Path("C:/x/lcm.safetensors"), 1.0)
    with pytest.raises(UsageError, match="scale inf"):
        LoraRef.parse("x.safetensors:inf")


def _make_taesd(out: Path) -> Path:
    from diffusers import AutoencoderTiny

    torch.manual_seed(2)
    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                    num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1),
                    latent_channels=4).save_pretrained(str(out))
    return out


SCALE = 0.7


@pytest.fixture(scope="module")
def lora_taesd(diffusers_folder, tmp_path_factory, arch):
    from edge_sdk.converters.convert import convert

    tmp = tmp_path_factory.mktemp("lora")
    lora = _make_lora(arch, tmp / "lora")
    taesd = _make_taesd(tmp / "taesd")
    b = convert(diffusers_folder, tmp / "lora.bundle", components=["denoiser", "decoder"], samples=1,
                loras=[f"{lora}:{SCALE}"], vae=taesd)
    return b, lora, taesd


@pytest.mark.slow
def test_lora_fused_into_exported_unet_equals_diffusers_fuse_lora(diffusers_folder, lora_taesd):
    import onnxruntime as ort
    from diffusers import StableDiffusionPipeline

    b, lora, _ = lora_taesd
    scale = SCALE
    rec = b.component("denoiser")["config"]["loras"]
    assert rec == [{"file": lora.name, "sha256": hashlib.sha256(lora.read_bytes()).hexdigest(), "scale": scale}]

    pipe = StableDiffusionPipeline.from_pretrained(str(diffusers_folder), safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True)
    g = torch.Generator().manual_seed(5)
    sample, t = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([321.0])
    ehs = torch.randn(1, 16, 32, generator=g)
    with torch.no_grad():
        base = pipe.unet(sample, t, encoder_hidden_states=ehs).sample.numpy()
        pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="test")
        pipe.fuse_lora(lora_scale=scale, adapter_names=["test"])
        ref = pipe.unet(sample, t, encoder_hidden_states=ehs).sample.numpy()

    art = b.artifact("denoiser", "onnx", "fp32")
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    got = sess.run(None, dict(zip(names, (sample.numpy(), t.numpy(), ehs.numpy()), strict=False)))[0]

    def rel(a, b):
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    assert rel(ref, base) > 1e-2  # the LoRA does change the UNet, so equality below means something
    assert rel(got, ref) < 1e-4  # fp32 export bar (summation order only), as for every fp32 artifact


def test_bad_lora_files_are_clear_errors(diffusers_folder, tmp_path):
    from edge_sdk.converters.sources import load_source

    with pytest.raises(ModelSourceError, match="no such file"):
        load_source(diffusers_folder, loras=[str(tmp_path / "missing.safetensors")])
    bad = tmp_path / "bad.txt"
    bad.write_text("x")
    with pytest.raises(ModelSourceError, match="expected a .safetensors"):
        load_source(diffusers_folder, loras=[str(bad)])
    with pytest.raises(UsageError, match="--lora applies to diffusers folders only"):
        load_source("examples.tiny:make", loras=[str(bad)])


@pytest.mark.slow
def test_tiny_vae_decoder_is_exported_and_generates(lora_taesd):
    from diffusers import AutoencoderTiny

    from edge_sdk import api

    b, _, taesd = lora_taesd
    ref_vae = AutoencoderTiny.from_pretrained(str(taesd))
    assert b.model["latent_scale_factor"] == ref_vae.config.scaling_factor == 1.0
    assert b.model["vae_downsample"] == 8  # TAESD: 8 px per latent cell (the SD VAE here: 2)
    assert b.artifact("decoder", "onnx", "fp32").validation["rel_l2"] < 1e-4  # fp32 export bar
    assert "AutoencoderTiny" in b.manifest["description"]
    embeds = np.random.default_rng(0).standard_normal((1, 16, 32)).astype(np.float32)
    with api.load(b) as g:
        res = g.generate(prompt_embeds=embeds, negative_prompt_embeds=np.zeros_like(embeds), steps=2, seed=0)
    img = np.asarray(res.images)
    assert img.shape == (1, 64, 64, 3) and img.dtype == np.uint8 and img.std() > 0


def test_incompatible_vae_is_a_clear_error(diffusers_folder, tmp_path):
    from diffusers import AutoencoderTiny

    from edge_sdk.converters.sources import load_source

    AutoencoderTiny(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4,
                    num_encoder_blocks=(1,) * 4, num_decoder_blocks=(1,) * 4,
                    latent_channels=16).save_pretrained(str(tmp_path / "t16"))
    with pytest.raises(ModelSourceError, match="its latents have 16 channels, the UNet makes 4"):
        load_source(diffusers_folder, vae=tmp_path / "t16")
    with pytest.raises(ModelSourceError, match="not a VAE folder"):
        load_source(diffusers_folder, vae=tmp_path)
