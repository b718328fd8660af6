"""A manifest's stream section (issue 16): what loading refuses, each with one clear error.

Pure manifest validation on hand-built dicts (no model files): the same ``manifest.validate`` that
``Bundle.open`` runs before any file is read. The converted case is in
tests/pipelines/test_streaming.py.
"""

from __future__ import annotations

import copy

import pytest

from edge_sdk import manifest
from edge_sdk.errors import ManifestError

SHA = "0" * 64


def _t(name: str, *shape) -> dict:
    return {"name": name, "dtype": "float32", "shape": list(shape) or ["batch", 4, "height", "width"]}


def _art(path: str, fmt: str = "onnx") -> dict:
    return {"format": fmt, "precision": "fp32", "entry": path, "files": [{"path": path, "sha256": SHA, "size": 1}]}


def _part(name: str, ins: list[str], outs: list[str]) -> dict:
    return {"name": name, "inputs": [_t(n) for n in ins], "outputs": [_t(n) for n in outs],
            "artifacts": [_art(f"denoiser/onnx/fp32-{name}/model.onnx")]}


def _manifest() -> dict:
    parts = [_part("embed", ["sample", "timestep"], ["skip0", "temb"]),
             _part("down0", ["skip0", "temb", "encoder_hidden_states"], ["skip1"]),
             _part("up0", ["skip1", "temb", "skip0"], ["up0"]),
             _part("out", ["up0"], ["noise_pred"])]
    return {"schema_version": 1, "sdk_version": "0.1.0", "name": "s", "model": {"kind": "latent_diffusion"},
            "sampler": {}, "components": {"denoiser": {
                "role": "denoiser",
                "inputs": [_t("sample"), _t("timestep", "batch"), _t("encoder_hidden_states", "batch", 8, 32)],
                "outputs": [_t("noise_pred")], "artifacts": [_art("denoiser/onnx/fp32/model.onnx")],
                "stream": {"split": "unet-blocks", "parts": parts}}}}


def _refused(change, words: str) -> None:
    data = copy.deepcopy(_manifest())
    change(data["components"]["denoiser"]["stream"]["parts"])
    with pytest.raises(ManifestError, match=words) as e:
        manifest.validate(data)
    assert "components/denoiser/stream" in e.value.message


def test_a_consistent_stream_section_loads():
    data = manifest.validate(_manifest())
    assert len(data["components"]["denoiser"]["stream"]["parts"]) == 4
    # Every part's file is listed for hashing with the whole component's.
    assert len(manifest.all_files(data)) == 5


def test_parts_out_of_order_are_refused():
    def swap(parts):
        parts[1], parts[2] = parts[2], parts[1]

    _refused(swap, r"parts out of order: part 'up0' \(#1\) takes 'skip1', which part 'down0' \(#2\) makes later")


def test_a_dangling_tensor_is_refused():
    def dangle(parts):
        parts[2]["inputs"][2]["name"] = "skip7"

    _refused(dangle, "takes 'skip7', which neither the component's inputs nor any part provide")


def test_a_tensor_made_twice_is_refused():
    def twice(parts):
        parts[2]["outputs"][0]["name"] = "skip1"

    _refused(twice, "tensor 'skip1' is made by parts 'down0' and 'up0'")


def test_the_last_part_must_make_the_output():
    def lose(parts):
        parts[3]["outputs"][0]["name"] = "other"

    _refused(lose, "output 'noise_pred' is not made by the last part")


def test_parts_must_share_formats():
    def other(parts):
        parts[2]["artifacts"][0]["format"] = "openvino"

    _refused(other, "differ in their artifacts")


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "denoiser/../../x.onnx"])
def test_a_part_pointing_outside_the_bundle_is_refused(path):
    data = _manifest()
    part = data["components"]["denoiser"]["stream"]["parts"][1]
    part["artifacts"][0] = _art(path)
    with pytest.raises(ManifestError, match="stream/parts/1/artifacts/0"):
        manifest.validate(data)


def test_a_part_sharing_a_file_with_the_component_is_refused():
    data = _manifest()
    data["components"]["denoiser"]["stream"]["parts"][0]["artifacts"][0] = _art("denoiser/onnx/fp32/model.onnx")
    with pytest.raises(ManifestError, match="listed twice"):
        manifest.validate(data)
