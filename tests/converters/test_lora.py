"""LoRA at convert time: a LoRA built with PEFT/diffusers' own APIs at test dimensions, saved with
save_lora_weights, fused by `convert --lora FILE:SCALE`; the exported ONNX UNet equals diffusers'
own pipeline.load_lora_weights + fuse_lora result, and the manifest records file, sha256, scale."""

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


@pytest.mark.slow
def test_lora_fused_into_exported_unet_equals_diffusers_fuse_lora(diffusers_folder, tmp_path, arch):
    import onnxruntime as ort
    from diffusers import StableDiffusionPipeline

    from edge_sdk.converters.convert import convert

    lora = _make_lora(arch, tmp_path / "lora")
    scale = 0.7
    b = convert(diffusers_folder, tmp_path / "lora.bundle", components=["denoiser"], samples=1,
                loras=[f"{lora}:{scale}"])
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
    got = sess.run(None, dict(zip(names, (sample.numpy(), t.numpy(), ehs.numpy()))))[0]

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
