"""Model sources: a .pt2 program, a diffusers-style folder, weights that must not run code."""

from __future__ import annotations

import pickle

import pytest
import torch

from edge_sdk.converters.convert import convert
from edge_sdk.converters.sources import load_source, load_weights
from edge_sdk.errors import ModelSourceError


class Small(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.b = torch.nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.b(torch.nn.functional.silu(self.a(sample))) * (timestep[:, None, None, None] / 1000)


def test_pt2_program_converts_with_its_own_names_and_dynamic_dims(tmp_path):
    torch.manual_seed(0)
    m = Small().eval()
    args = (torch.randn(2, 3, 16, 16), torch.tensor([10.0, 900.0]))
    batch = torch.export.Dim("batch", min=1, max=32)
    ep = torch.export.export(m, args, dynamic_shapes={"sample": {0: batch}, "timestep": {0: batch}})
    torch.export.save(ep, tmp_path / "model.pt2")
    spec = load_source(tmp_path / "model.pt2")
    comp = spec.components["denoiser"]
    assert list(comp.example_inputs) == ["sample", "timestep"]
    assert comp.dynamic_dims == {"sample": {0: "batch"}, "timestep": {0: "batch"}}
    assert spec.model["sample_size"] == [16, 16]
    b = convert(tmp_path / "model.pt2", tmp_path / "pt2.bundle", formats="onnx")
    assert b.artifact("denoiser", "onnx", "fp32").validation["rel_l2"] < 1e-4  # fp32 bar
    assert [t.shape for t in b.signature("denoiser")[0]] == [("batch", 3, 16, 16), ("batch",)]


def test_bad_pt2_and_unknown_sources_are_clear_errors(tmp_path):
    bad = tmp_path / "broken.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelSourceError, match="is not a torch.export program"):
        load_source(bad)
    with pytest.raises(ModelSourceError, match="without model_index.json"):
        load_source(tmp_path)
    with pytest.raises(ModelSourceError, match="does not exist"):
        load_source(tmp_path / "missing.pt2")


class _Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_weights_load_without_unpickling_code(tmp_path):
    m = Small()
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"a.weight": _Boom()}, f)
    with pytest.raises(ModelSourceError, match="was refused"):
        load_weights(m, evil)
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = Small()
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(src.state_dict(), tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        dst = load_weights(Small(), tmp_path / name)
        assert torch.equal(dst.a.weight, src.a.weight)
    with pytest.raises(ModelSourceError, match="do not fit the model"):
        load_weights(torch.nn.Linear(2, 2), tmp_path / "w.safetensors")


def test_diffusers_folder_becomes_components_and_bundle_sections(diffusers_folder):
    spec = load_source(diffusers_folder)
    assert list(spec.components) == ["denoiser", "decoder", "encoder", "text_encoder"]
    assert spec.model == {"kind": "latent_diffusion", "conditioning": "text", "sample_size": [8, 8],
                          "in_channels": 4, "spatial_multiple": 2, "max_text_length": 16,
                          "latent_scale_factor": 0.18215, "vae_downsample": 2, "image_channels": 3,
                          "output_range": [-1.0, 1.0]}
    assert spec.sampler["default_sampler"] == "ddim" and spec.sampler["default_steps"] == 30  # the SD family default
    assert spec.sampler["config"]["beta_schedule"] == "scaled_linear"
    assert spec.sampler["config"]["steps_offset"] == 1
    den = spec.components["denoiser"]
    assert [(k, tuple(v.shape)) for k, v in den.example_inputs.items()] == [
        ("sample", (1, 4, 8, 8)), ("timestep", (1,)), ("encoder_hidden_states", (1, 16, 32))]
    # decoder takes latent / scaling_factor: it must equal vae.decode on the same latent.
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(diffusers_folder / "vae")).eval()
    z = spec.components["decoder"].example_inputs["latent"]
    with torch.no_grad():
        assert torch.allclose(spec.components["decoder"].module(z), vae.decode(z).sample)
        img = spec.components["encoder"].example_inputs["image"]
        assert torch.allclose(spec.components["encoder"].module(img), vae.encode(img).latent_dist.mean)
    tok = spec.components["text_encoder"].extra_files["tokenizer.json"]
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(tok)).encode("a photo").ids
    assert ids[0] == 512 and ids[-1] == 513  # <|startoftext|> ... <|endoftext|> of the tiny vocabulary


def test_diffusers_folder_without_weights_is_a_clear_error(tmp_path, diffusers_folder):
    import shutil

    broken = tmp_path / "sd"
    shutil.copytree(diffusers_folder, broken)
    for f in (broken / "unet").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelSourceError, match="holds no weights"):
        load_source(broken)
    (broken / "model_index.json").write_text("{not json")
    with pytest.raises(ModelSourceError, match="not valid JSON"):
        load_source(broken)


@pytest.mark.slow
def test_diffusers_cross_attention_unet_converts_to_openvino(diffusers_folder, tmp_path):
    # The wrapper's forward says (sample, timestep, cond); the IR must still say our names.
    b = convert(diffusers_folder, tmp_path / "ov.bundle", formats="openvino", components=["denoiser"])
    assert b.artifact("denoiser", "openvino", "fp32").validation["rel_l2"] < 1e-4  # fp32 bar
    assert [(t.name, t.shape) for t in b.signature("denoiser")[0]] == [
        ("sample", ("batch", 4, "height", "width")), ("timestep", ("batch",)),
        ("encoder_hidden_states", ("batch", 16, 32))]
    assert b.sampler["default_sampler"] == "ddim" and b.model["conditioning"] == "text"
