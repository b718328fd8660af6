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


@pytest.mark.slow
def test_planner_takes_sliced_attention_before_slower_rungs_as_the_cap_shrinks(sliced_bundle, tmp_path, arch):
    """Caps from roomy to tight at 64x64 latent cells (attention-dominated): the plan goes from
    full attention with batched CFG, to sliced attention (same speed class), to sequential CFG,
    to the UNet loaded per call, never back up the ladder, and each plan's peak fits its cap."""
    from edge_sdk.errors import PlanError
    from edge_sdk.planning.board import load_board
    from edge_sdk.planning.planner import FIT_MARGIN, MB, PlanRequest, plan

    b = sliced_bundle
    px = 64 * int(b.model.get("vae_downsample", 1))
    req = PlanRequest(height=px, width=px, guidance=7.5, measure=False)
    seen, cap = [], 4096
    for i in range(40):
        try:
            p = plan(b, load_board(arch.board_with_cap(tmp_path, f"cap{i}", cap)), req)
        except PlanError:
            break
        den = p.components["denoiser"]
        rung = (den.variant, p.cfg, den.resident)
        assert p.estimates["peak"] <= cap * MB * FIT_MARGIN
        if not seen or seen[-1][0] != rung:
            seen.append((rung, p.estimates["peak"]))
        cap = int(p.estimates["peak"] / MB / FIT_MARGIN) - 1  # just below what this plan needs
    rungs = [r for r, _ in seen]
    assert rungs[0] == ("", "batched", True)
    assert rungs[1] == ("sliced", "batched", True)
    assert ("sliced", "sequential", True) in rungs and rungs[-1][2] is False
    peaks = [pk for _, pk in seen]
    assert peaks == sorted(peaks, reverse=True)


_SESSION_RSS = r"""
import sys, onnxruntime as ort
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
so = ort.SessionOptions()
so.optimized_model_filepath = sys.argv[2]  # the graph as ORT keeps it after its optimizations
before = rss()
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
print(rss() - before)
"""


@pytest.mark.slow
def test_int8_weights_stay_int8_in_an_ort_session_and_match_fp32(sliced_bundle, tmp_path):
    """int8-weight (DequantizeLinear before Conv/MatMul): ORT must not fold the dequantization at
    session creation, or the session holds fp32 weights again. Checked on the graph ORT keeps
    (its optimized model) and on the session's resident memory, each in a fresh process."""
    import subprocess
    import sys

    import onnx

    from edge_sdk.converters.quantize_onnx import to_int8_weight

    full = sliced_bundle.artifact("denoiser", "onnx", "fp32", "").path
    w8 = tmp_path / "w8.onnx"
    n = to_int8_weight(full, w8)
    rss = {}
    for name, path in (("fp32", full), ("int8", w8)):
        opt = tmp_path / f"{name}-opt.onnx"
        out = subprocess.run([sys.executable, "-c", _SESSION_RSS, str(path), str(opt)], capture_output=True,
                             text=True, check=True)
        rss[name] = int(out.stdout.split()[-1])
        kept = onnx.load(str(opt))
        # ORT keeps Conv weights behind DequantizeLinear (int8) and turns DequantizeLinear + MatMul
        # into MatMulNBits (8 bits, stored uint8): either way one byte per weight.
        eight = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
        bits8 = sum(i.data_type in eight and len(i.dims) >= 2 for i in kept.graph.initializer)
        assert bits8 == (n if name == "int8" else 0), name  # no quantized weight folded back to fp32
    # The session shrinks by at least the bytes the file saved (ORT holds fp32 weights ~1.6x over:
    # here 4.5 -> 2.2 MB of file, 27.1 -> 23.4 MB of session; on an 80M-parameter UNet, 601 -> 114 MB).
    saved_file = full.stat().st_size - w8.stat().st_size
    assert rss["fp32"] - rss["int8"] >= saved_file, (rss, saved_file)
    # And it still computes what the fp32 artifact does (validated against PyTorch to 1e-4 at
    # convert), within the int8-weight bar (5e-2 relative L2), at a size other than the export's.
    import onnxruntime as ort

    feeds = _feeds("denoiser", np.random.default_rng(3))
    got = ort.InferenceSession(str(w8), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    ref = ort.InferenceSession(str(full), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert _rel(got, ref) < 5e-2


def test_int8_weight_keeps_a_token_embedding_table_int8(tmp_path):
    """A CLIP text encoder's token table (Gather on axis 0) is stored int8 per row and gathered as
    int8: no fp32 copy of it in the file, and the outputs stay within the int8-weight bar."""
    import onnx
    import onnxruntime as ort
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from edge_sdk.converters.quantize_onnx import to_int8_weight

    torch.manual_seed(0)
    # 16384 x 64 = 2^20 elements: the smallest table the pass quantizes (CLIP's is 49408 x 768).
    te = CLIPTextModel(CLIPTextConfig(vocab_size=16384, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=16, eos_token_id=2)).eval()
    full, w8 = tmp_path / "te.onnx", tmp_path / "te-int8.onnx"
    ids = torch.randint(0, 16384, (2, 16))
    torch.onnx.export(te, (ids,), str(full), input_names=["input_ids"], output_names=["last_hidden_state"],
                      dynamo=False)
    n = to_int8_weight(full, w8)
    kept = onnx.load(str(w8))
    tables = {i.name: i for i in kept.graph.initializer if list(i.dims) == [16384, 64]}
    assert [t.data_type for t in tables.values()] == [onnx.TensorProto.INT8]  # the only copy, int8
    assert n >= 1 + 2 * 6  # the table, and each layer's q/k/v/out/fc1/fc2 weights
    # 1 MiB of table weights now 1 byte each: the file shrinks by more than 3 bytes per element.
    assert full.stat().st_size - w8.stat().st_size > 3 * 2**20
    feeds = {"input_ids": ids.numpy()}
    got = ort.InferenceSession(str(w8), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    with torch.no_grad():
        ref = te(ids).last_hidden_state.numpy()
    # The int8-weight bar (5e-2 relative L2); per-row table scales add ~0.4 % of each row.
    assert _rel(got, ref) < 5e-2, _rel(got, ref)
