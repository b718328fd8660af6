"""ONNX's backend conformance suite (node tests) through our runtime layer, on ONNX Runtime and OpenVINO.

Each node test builds a one-op model; ``edge_sdk.measure.onnx_backend`` writes it to a file and
opens it with ``open_artifact`` exactly as a bundle's artifact is opened, then runs it through
``Runtime.run`` (feed checks included). Outputs are compared with the suite's reference at the
suite's own per-test tolerances (default rtol 1e-3, atol 1e-7: what ONNX Runtime's own run of this
suite uses, with the per-test overrides listed in EXCLUDE/TOLERANCE below).

Only the ops our converted models use are run (OPS, collected from real exports: see
``test_ops_cover_real_exports`` at the end, marked slow, which re-derives them). Every exclusion
is listed with its reason in EXCLUDE and in docs/runtimes.md.
"""

from __future__ import annotations

import importlib
import re
from collections import defaultdict

import onnx.backend.test
import pytest

from edge_sdk.measure.onnx_backend import backend_for

pytestmark = pytest.mark.slow  # hundreds of one-op models through two runtimes: the full run

# Op types in our exported models. Collected with edge_sdk.converters.onnx.export_onnx (dynamo, opset
# 20, and its TorchScript fallback, opset 18) from tiny diffusers UNet2DModel, UNet2DConditionModel,
# AutoencoderKL encoder/decoder, transformers CLIPTextModel, a DCGAN generator and
# examples/tiny_unet.py; plus QuantizeLinear/DequantizeLinear (int8-static artifacts are QDQ ONNX)
# and Sub/Exp/Pow/ReduceMean/GroupNormalization, which other exporter versions emit for the same
# layers (GroupNorm, SiLU, timestep embeddings).
OPS = (
    "Add", "BatchNormalization", "Cast", "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose",
    "Cos", "DequantizeLinear", "Div", "Equal", "Erf", "Exp", "Expand", "Gather", "Gelu", "Gemm",
    "GroupNormalization", "Identity", "InstanceNormalization", "IsNaN", "LayerNormalization", "MatMul", "Mul",
    "Pad", "Pow", "QuantizeLinear", "ReduceMean", "Relu", "Reshape", "Resize", "Shape", "Sigmoid", "Sin",
    "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Transpose", "Trilu", "Unsqueeze", "Where",
)
# The onnx.backend.test.case.node module that defines each op's tests, where it is not the lower-cased name.
_MODULE = {"BatchNormalization": "batch_normalization", "InstanceNormalization": "instance_normalization"}

# Tests left out, with the reason. Patterns match test names from the start (re.match).
EXCLUDE_ALL = {
    # Element types our converters never emit (fp32/fp16/int64/int32/int8/uint8/bool only).
    r"test_(cast|castlike|quantizelinear|dequantizelinear)_.*(float8|FLOAT8|e4m3|e5m2|e8m0|float4|FLOAT4|"
    r"int4|INT4|uint4|UINT4|int2|INT2|uint2|UINT2|bfloat16|BFLOAT16|string|STRING|int16|uint16|"
    r"INT16|UINT16)": "element types (float8/float4/int4/int2/int16/bfloat16/string) our artifacts never use",
    r"test_cast_no_saturate_": "float8 saturation modes: float8 types are never used",
    r"test_equal_string": "string tensors: never in our models",
    r"test_identity_(opt|sequence)": "optional / sequence types: never in our models",
    r"test_pow_types_.*uint(32|64)": "unsigned exponents: never in our models (ONNX Runtime has no kernel)",
}
EXCLUDE = {
    "onnxruntime": {
        r"test_(de)?quantizelinear(_axis|_blocked\w*)?(_cpu)?$": "the suite builds these at opset 28, for which "
            "ONNX Runtime 1.32 has no QuantizeLinear/DequantizeLinear kernel (NOT_IMPLEMENTED); our int8-static "
            "artifacts are QDQ at opset <= 21, and OpenVINO runs these same tests",
        r"test_resize_downsample_scales_(cubic|linear)_align_corners": "ONNX Runtime 1.32 differs from the "
            "reference by up to 1.05 (cubic) / 0.86 (linear) here; our exports never use align_corners "
            "(diffusers upsamples with nearest x2)",
    },
    "openvino": {
        r"test_unsqueeze_(axis_\d|negative_axes|three_axes|two_axes|unsorted_axes)(_cpu)?$":
            "axes fed as a runtime input give a dynamic-rank output, which OpenVINO's CPU plugin refuses; "
            "our exports always have constant axes",
        r"test_reduce_mean_default_axes_keepdims": "an empty `axes` input is folded away by OpenVINO's ONNX "
            "reader, so the model takes one input where the test feeds two; our ReduceMean axes are constants",
        r"test_split_zero_size_splits": "zero-size split outputs, folded away by OpenVINO's ONNX reader; never "
            "in our models",
        r"test_(de)?quantizelinear_blocked": "blocked quantization (block_size, opset 21+): OpenVINO's ONNX "
            "reader fails to convert it; our quantizer writes per-channel, not blocked, scales",
        r"test_cast_.*DOUBLE": "float64: OpenVINO's CPU plugin computes f64 as f32 and clamps +-inf to +-FLT_MAX; "
            "our models never carry float64",
        r"test_resize_.*(align_corners|antialias|cubic|tf_crop_and_resize|half_pixel_symmetric|not_larger|"
        r"not_smaller)": "Resize modes OpenVINO's ONNX reader rejects (tf_crop_and_resize, half_pixel_symmetric) "
            "or computes differently (cubic, antialias, align_corners: up to 1.05 off; keep_aspect_ratio_policy "
            "not_larger/not_smaller: wrong output shape); our exports use nearest x2 only",
        r"test_wrap_pad": "Pad mode 'wrap' (opset 19), not supported by OpenVINO's ONNX reader; our Pads are "
            "constant/reflect",
    },
}

# (op, runtime) pairs that the suite cannot check at all, and why.
NOT_COVERED = {
    ("QuantizeLinear", "onnxruntime"): "every remaining QuantizeLinear node test is opset 28 (see EXCLUDE)",
    ("DequantizeLinear", "onnxruntime"): "every remaining DequantizeLinear node test is opset 28 (see EXCLUDE)",
    ("Unsqueeze", "openvino"): "every Unsqueeze node test (opset 13+) feeds axes as an input (see EXCLUDE); the "
        "constant-axes form our exports use runs on OpenVINO in test_cross_runtime.py's real models",
}

# Loading every node test of the suite runs ~1,900 reference computations (~16 s here); we import
# only the case modules of OPS, which register just their own tests.
def _node_cases():
    for op in OPS:
        importlib.import_module(f"onnx.backend.test.case.node.{_MODULE.get(op, op.lower())}")
    from onnx.backend.test.case.node import _NodeTestCases

    return list(_NodeTestCases)


class OpSubsetBackendTest(onnx.backend.test.BackendTest):
    """``BackendTest`` over a given list of node cases (its own __init__ loads the whole suite)."""

    def __init__(self, backend, parent_module: str, cases) -> None:  # noqa: D107
        self.backend = backend
        self._parent_module = parent_module
        self._include_patterns = set()
        self._exclude_patterns = set()
        self._xfail_patterns = set()
        self._test_kwargs = {}
        self._test_items = defaultdict(dict)
        for case in cases:
            self._add_model_test(case, "Node")


_CASES = _node_cases()
_OPTIONS = {"onnxruntime": {}, "openvino": {"cache_dir": False}}  # thousands of one-op models: no cache

for _rt in ("onnxruntime", "openvino"):
    _suite = OpSubsetBackendTest(backend_for(_rt, options=_OPTIONS[_rt]), __name__, _CASES)
    for _pattern in {**EXCLUDE_ALL, **EXCLUDE[_rt]}:
        _suite.exclude(rf"^(?:{_pattern})")
    for _name, _case in _suite.test_cases.items():
        _cls = type(f"{_name}_{_rt}", (_case,), {})
        _cls.__module__ = __name__
        globals()[_cls.__name__] = _cls
del _suite, _case, _cls


def test_every_op_has_node_tests():
    """Each op in OPS contributes node tests that are not all excluded (a typo would silently cover nothing)."""
    names = [c.name for c in _CASES]
    for op in OPS:
        model_ops = [c.name for c in _CASES if any(n.op_type == op for n in c.model.graph.node)]
        for rt in EXCLUDE:
            kept = [n for n in model_ops if not any(re.match(p, n) for p in {**EXCLUDE_ALL, **EXCLUDE[rt]})]
            assert kept or (op, rt) in NOT_COVERED, f"no {rt} node test left for {op} (of {len(names)} cases)"




@pytest.mark.slow
def test_ops_cover_real_exports(tmp_path, tiny_torch):
    """Export real tiny architectures as the converter does; every op they contain must be in OPS."""
    import onnx
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel
    from torch import nn
    from transformers import CLIPTextConfig, CLIPTextModel

    from edge_sdk.converters.onnx import export_onnx
    from edge_sdk.converters.sources import component_from

    torch.manual_seed(0)

    class Unet(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, sample, timestep):
            return self.m(sample, timestep).sample

    class CondUnet(Unet):
        def forward(self, sample, timestep, encoder_hidden_states):
            return self.m(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample

    class Decode(Unet):
        def forward(self, latent):
            return self.m.decode(latent).sample

    class Encode(Unet):
        def forward(self, image):
            return self.m.encode(image).latent_dist.mean

    class Text(Unet):
        def forward(self, input_ids):
            return self.m(input_ids).last_hidden_state

    class DCGAN(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(3, 16)
            self.net = nn.Sequential(nn.ConvTranspose2d(16, 32, 4, 1, 0), nn.BatchNorm2d(32), nn.ReLU(),
                                     nn.ConvTranspose2d(32, 3, 4, 2, 1), nn.Tanh())

        def forward(self, z, class_labels):
            return self.net((z + self.emb(class_labels))[:, :, None, None])

    blocks = {"block_out_channels": (16, 32), "layers_per_block": 1, "norm_num_groups": 8}
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, attention_head_dim=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), **blocks)
    cunet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, cross_attention_dim=16,
                                 attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), **blocks)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, **blocks)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=8))
    cases = {
        "tiny_unet": (tiny_torch[0], tiny_torch[1], "denoiser"),
        "unet": (Unet(unet), {"sample": torch.randn(1, 3, 16, 16), "timestep": torch.tensor([10.0])}, "denoiser"),
        "cond_unet": (CondUnet(cunet), {"sample": torch.randn(1, 4, 8, 8), "timestep": torch.tensor([10.0]),
                                        "encoder_hidden_states": torch.randn(1, 8, 16)}, "denoiser"),
        "vae_decoder": (Decode(vae), {"latent": torch.randn(1, 4, 8, 8)}, "decoder"),
        "vae_encoder": (Encode(vae), {"image": torch.randn(1, 3, 16, 16)}, "encoder"),
        "clip_text": (Text(clip), {"input_ids": torch.randint(0, 64, (1, 8))}, "text_encoder"),
        "dcgan": (DCGAN(), {"z": torch.randn(1, 16), "class_labels": torch.tensor([1])}, "generator"),
    }
    used: dict[str, set[str]] = defaultdict(set)

    def walk(graph, where):
        for node in graph.node:
            used[node.op_type].add(where)
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    walk(attr.g, where)

    for name, (module, inputs, role) in cases.items():
        path = tmp_path / f"{name}.onnx"
        export_onnx(component_from(module.eval(), inputs, role=role), path)
        model = onnx.load(str(path))
        assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}, f"{name}: custom op domains"
        walk(model.graph, name)
        for fn in model.functions:
            for node in fn.node:
                used[node.op_type].add(name)
    missing = {op: sorted(w) for op, w in used.items() if op not in OPS}
    assert not missing, f"ops in real exports that the backend suite does not cover: {missing}"
    assert {"Conv", "MatMul", "Softmax", "Resize", "LayerNormalization"} <= set(used)


def test_exclusions_are_documented():
    """docs/runtimes.md lists every exclusion pattern of this file, under its runtime."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "runtimes.md").read_text()
    rows = {}
    for line in doc.splitlines():
        m = re.match(r"\| (both|onnxruntime|openvino) \| `(.+)` \|", line)
        if m:
            rows[m.group(2).replace("\\|", "|")] = m.group(1)
    expected = {p: "both" for p in EXCLUDE_ALL}
    for rt, pats in EXCLUDE.items():
        expected.update({p: rt for p in pats})
    assert rows == expected
