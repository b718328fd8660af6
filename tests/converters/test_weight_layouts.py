"""Weights as the hub lays them out, written by diffusers'/transformers' own save_pretrained:
fp16 variants (picked automatically when alone, or with --variant), sharded weights with an index,
.bin files; each loads into the same numbers, and every odd layout is one clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from edge_sdk.converters.sources import load_source
from edge_sdk.errors import ModelSourceError, UsageError

PARTS = {"denoiser": "unet", "decoder": "vae", "text_encoder": "text_encoder"}


def _reference(arch) -> dict[str, torch.nn.Module]:
    return {"unet": arch.unet_cond(), "vae": arch.vae(), "text_encoder": arch.clip()}


def _resave(root: Path, arch, **kwargs) -> None:
    """Replace every component's weights with save_pretrained(**kwargs) of the same model."""
    half = kwargs.pop("half", False)
    for sub, model in _reference(arch).items():
        for f in (root / sub).iterdir():
            if f.name != "config.json":
                f.unlink()
        (model.half() if half else model).save_pretrained(str(root / sub), **kwargs)


def _state(spec, role: str) -> dict[str, torch.Tensor]:
    inner = spec.components[role].module
    inner = getattr(inner, "unet", None) or getattr(inner, "vae", None) or inner.model
    return inner.state_dict()


def _assert_loaded(spec, arch, *, half: bool) -> None:
    ref = _reference(arch)
    for role, sub in PARTS.items():
        want = ref[sub].state_dict()
        got = _state(spec, role)
        assert set(got) == set(want), role
        for k, v in want.items():
            assert got[k].dtype == torch.float32, (role, k)  # fp16 files load as fp32 for export
            # Exact: a load copies numbers; fp16 files hold the fp16 rounding of the same weights.
            expected = v.half().float() if half and v.is_floating_point() else v
            assert torch.equal(got[k], expected), (role, k)


@pytest.fixture
def folder(tmp_path, diffusers_folder) -> Path:
    root = tmp_path / "sd"
    shutil.copytree(diffusers_folder, root)
    return root


def test_fp16_variant_alone_is_picked_automatically(folder, arch):
    _resave(folder, arch, variant="fp16", half=True)
    assert any((folder / "unet").glob("*.fp16.safetensors"))
    _assert_loaded(load_source(folder), arch, half=True)


def test_variant_flag_picks_among_plain_and_variant(folder, arch):
    _resave(folder, arch, variant="fp16", half=True)
    for sub, model in _reference(arch).items():  # and the plain fp32 weights beside them
        model.save_pretrained(str(folder / sub))
    _assert_loaded(load_source(folder), arch, half=False)  # plain weights win by default
    _assert_loaded(load_source(folder, variant="fp16"), arch, half=True)
    with pytest.raises(ModelSourceError, match="has no 'ema' weights"):
        load_source(folder, variant="ema")


def test_sharded_weights_with_index_load(folder, arch):
    _resave(folder, arch, max_shard_size="200KB")
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    assert len(list((folder / "unet").glob("*-of-*.safetensors"))) > 1
    _assert_loaded(load_source(folder), arch, half=False)


def test_sharded_fp16_variant_loads(folder, arch):
    _resave(folder, arch, max_shard_size="200KB", variant="fp16", half=True)
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors.index.fp16.json").is_file()
    _assert_loaded(load_source(folder), arch, half=True)


def test_bin_weights_load_weights_only(folder, arch):
    _resave(folder, arch, safe_serialization=False)
    assert (folder / "unet" / "diffusion_pytorch_model.bin").is_file()
    _assert_loaded(load_source(folder), arch, half=False)


def test_odd_layouts_are_one_clear_error(folder, arch):
    unet = arch.unet_cond()
    for f in (folder / "unet").glob("*.safetensors"):
        f.unlink()
    unet.save_pretrained(str(folder / "unet"), variant="fp16")
    unet.save_pretrained(str(folder / "unet"), variant="ema")
    with pytest.raises(ModelSourceError, match="several weight variants: ema, fp16") as e:
        load_source(folder)
    assert "--variant" in str(e.value)
    with pytest.raises(UsageError, match="diffusers folders only"):
        load_source("examples.tiny:make", variant="fp16")


def test_shard_index_may_only_name_shards_beside_it(folder, arch):
    _resave(folder, arch, max_shard_size="200KB")
    idx = folder / "unet" / "diffusion_pytorch_model.safetensors.index.json"
    data = json.loads(idx.read_text())
    first = next(iter(data["weight_map"]))
    data["weight_map"][first] = "../vae/diffusion_pytorch_model-00001-of-00002.safetensors"
    idx.write_text(json.dumps(data))
    with pytest.raises(ModelSourceError, match="not a file name in the folder"):
        load_source(folder)
    data["weight_map"][first] = "diffusion_pytorch_model-00099-of-00099.safetensors"
    idx.write_text(json.dumps(data))
    with pytest.raises(ModelSourceError, match="shard diffusion_pytorch_model-00099-of-00099.safetensors is missing"):
        load_source(folder)
