"""Attention in query chunks (``--attention sliced:N``, issue 16).

One convert of the SD-style test folder's UNet (diffusers' own UNet2DConditionModel written with
save_pretrained), ONNX fp32, with the ``sliced`` variant (the decoder takes the same processor;
one component keeps the convert short). The sliced artifacts run on ONNX Runtime and on OpenVINO (which reads
the ONNX file) at a size other than the export's, and must equal the full-attention artifact.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.errors import UsageError


@pytest.fixture(scope="module")
def sliced_bundle(diffusers_folder, tmp_path_factory):
    from edge_sdk.converters.convert import convert

    out = tmp_path_factory.mktemp("sliced") / "b"
    return convert(str(diffusers_folder), out, formats="onnx", precisions="fp32",
                   components=["denoiser"], attention="sliced:4", samples=1)


def _feeds(role: str, rng) -> dict[str, np.ndarray]:
    if role == "denoiser":  # 12x16 cells: not the export's 8x8, batch 2 as with CFG
        return {"sample": rng.standard_normal((2, 4, 12, 16), dtype=np.float32),
                "timestep": np.array([400.0, 400.0], np.float32),
                "encoder_hidden_states": rng.standard_normal((2, 16, 32), dtype=np.float32)}
    return {"latent": rng.standard_normal((1, 4, 12, 16), dtype=np.float32)}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.slow
def test_sliced_attention_equals_full_attention_on_ort_and_openvino(sliced_bundle):
    from edge_sdk.runtimes.onnxruntime import OnnxRuntime
    from edge_sdk.runtimes.openvino import OpenVinoRuntime

    b = sliced_bundle
    for role in ("denoiser",):
        assert b.component(role)["config"]["variants"]["sliced"] == {"attention": "sliced:4"}
        full = b.artifact(role, "onnx", "fp32", "")
        sliced = b.artifact(role, "onnx", "fp32", "sliced")
        assert sliced.validation["rel_l2"] < 1e-5  # against PyTorch's full attention, fp32
        feeds = _feeds(role, np.random.default_rng(7))
        for cls, opts in ((OnnxRuntime, {}), (OpenVinoRuntime, {"cache_dir": False, "inference_precision": "f32"})):
            want = cls(full.path, device="cpu", options=opts).run(feeds)
            got = cls(sliced.path, device="cpu", options=opts).run(feeds)
            for k in want:
                # Same arithmetic in fp32, only the summation order within softmax/AV differs.
                assert _rel(got[k], want[k]) < 1e-5, (role, cls.name, k)


def test_attention_option_is_parsed_or_refused():
    from edge_sdk.converters.attention import parse_attention

    assert parse_attention("sliced:16") == 16
    assert parse_attention("full") is None and parse_attention(None) is None
    for bad in ("sliced", "sliced:1", "sliced:x", "chunks:4", "sliced:99999"):
        with pytest.raises(UsageError, match="attention"):
            parse_attention(bad)
