"""Anything edge-sdk cannot convert yet is one clear error naming the component and what to do,
before any loader or exporter runs: SD3/Flux transformer folders, ControlNet, single-file
checkpoints, lone component folders. Folders are written by diffusers' own save_pretrained."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from edge_sdk.converters.sources import load_source
from edge_sdk.errors import ConversionError, ModelSourceError


def _pipeline_folder(tmp_path, diffusers_folder, part: str, model, pipeline: str):
    root = tmp_path / pipeline
    shutil.copytree(diffusers_folder, root)
    shutil.rmtree(root / "unet")
    model.save_pretrained(str(root / part))
    index = json.loads((root / "model_index.json").read_text())
    index.pop("unet")
    index.update({"_class_name": pipeline, part: ["diffusers", type(model).__name__]})
    (root / "model_index.json").write_text(json.dumps(index))
    return root


def test_sd3_transformer_folder_is_refused_naming_the_component(tmp_path, diffusers_folder):
    from diffusers import SD3Transformer2DModel

    model = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                                  num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                                  pooled_projection_dim=16, out_channels=4, pos_embed_max_size=16)
    root = _pipeline_folder(tmp_path, diffusers_folder, "transformer", model, "StableDiffusion3Pipeline")
    with pytest.raises(ConversionError, match=r"component transformer \(SD3Transformer2DModel\) is not supported") as e:
        load_source(root)
    assert "UNet" in e.value.message and e.value.hint


def test_flux_transformer_folder_is_refused(tmp_path, diffusers_folder):
    from diffusers import FluxTransformer2DModel

    model = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                   attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                   pooled_projection_dim=16, axes_dims_rope=(2, 2, 4))
    root = _pipeline_folder(tmp_path, diffusers_folder, "transformer", model, "FluxPipeline")
    with pytest.raises(ConversionError, match=r"component transformer \(FluxTransformer2DModel\)"):
        load_source(root)


def test_controlnet_is_refused_in_a_pipeline_and_alone(tmp_path, diffusers_folder, arch):
    from diffusers import ControlNetModel

    cn = ControlNetModel.from_unet(arch.unet_cond())
    root = tmp_path / "cn"
    shutil.copytree(diffusers_folder, root)
    cn.save_pretrained(str(root / "controlnet"))
    with pytest.raises(ConversionError, match=r"component controlnet \(ControlNetModel\) is not supported"):
        load_source(root)
    with pytest.raises(ModelSourceError, match=r"one component folder \(ControlNetModel\)") as e:
        load_source(root / "controlnet")
    assert "ControlNet is not supported" in e.value.hint


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_checkpoint_is_refused_with_the_way_to_a_folder(tmp_path, arch, suffix):
    state = arch.unet_cond().state_dict()
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": state}, path)
    with pytest.raises(ModelSourceError, match="single-file checkpoint") as e:
        load_source(path)
    assert "from_single_file" in e.value.hint


def test_cli_says_it_in_one_line_with_the_conversion_exit_code(tmp_path, cli):
    path = tmp_path / "v1-5.ckpt"
    path.write_bytes(b"not really")
    r = cli("convert", str(path), "-o", str(tmp_path / "out"))
    assert r.returncode == 4, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "single-file checkpoint" in errors[0] and "Traceback" not in r.stderr
