"""One small denoiser into ONNX, OpenVINO IR and TFLite at every precision, each artifact run by
its own runtime and compared with PyTorch. (The diffusers / transformers / DCGAN matrix is in
test_architectures.py, marked slow.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_sdk.bundle import Bundle
from edge_sdk.converters.convert import ConvertReport, convert
from edge_sdk.converters.sources import load_entry_point
from edge_sdk.runtimes.registry import open_artifact

pytestmark = pytest.mark.slow  # converts or plans whole bundles: seconds each, in the full run

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "tiny_unet.py") + ":factory"
# fp32 artifacts differ from PyTorch by summation order only (~1e-6 measured); 1e-4 is the fp32
# default bar, asserted here too so a loosened default cannot hide a regression.
FP32_BAR = 1e-4
# fp16 weights (3 significant digits) with the timestep embedding kept fp32: ~4e-4 measured.
FP16_BAR = 2e-3
# int8 per-channel weights, float activations: ~6e-3 measured.
INT8W_BAR = 2e-2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    stages = []
    rep = ConvertReport(None)
    out = tmp_path_factory.mktemp("conv") / "tiny.bundle"
    b = convert(EXAMPLE, out, formats="all", precisions="fp32,fp16,int8-weight", static_variant=True,
                report=rep, progress=lambda *a: stages.append(a))
    return b, stages, rep


def test_every_format_and_precision_matches_torch(tiny):
    b = tiny[0]
    for fmt in ("onnx", "openvino", "tflite"):
        for prec, bar in (("fp32", FP32_BAR), ("fp16", FP16_BAR), ("int8-weight", INT8W_BAR)):
            v = b.artifact("denoiser", fmt, prec).validation
            assert v["passed"] is True and v["samples"] == 3
            assert v["rel_l2"] < bar, (fmt, prec, v)
            assert v["cosine"] > 0.999, (fmt, prec, v)


def test_smaller_precisions_make_smaller_files(tiny):
    b = tiny[0]
    for fmt in ("onnx", "openvino", "tflite"):
        fp32 = b.artifact("denoiser", fmt, "fp32").size
        assert b.artifact("denoiser", fmt, "fp16").size < 0.7 * fp32, fmt
        assert b.artifact("denoiser", fmt, "int8-weight").size < 0.65 * fp32, fmt


def test_manifest_records_figures_and_seconds(tiny):
    b = Bundle.open(tiny[0].root)  # sha256 of every file checked again
    rows = json.loads((b.root / "manifest.json").read_text())["components"]["denoiser"]["artifacts"]
    assert len(rows) == 3 * 3 + 3  # 3 formats x 3 precisions + openvino's static variants
    for r in rows:
        assert r["convert_seconds"] >= 0
        assert {"rel_l2", "max_abs", "cosine", "tolerance", "samples", "passed"} <= set(r["validation"])
    ov = b.artifact("denoiser", "openvino", "fp32")
    assert ov.path.suffix == ".xml" and ov.path.with_suffix(".bin").is_file()
    assert b.artifact("denoiser", "tflite", "fp32").static_shapes == {"sample": (1, 3, 32, 32), "timestep": (1,)}


def test_onnx_has_named_dynamic_dims_and_runs_other_shapes(tiny):
    import onnx

    path = tiny[0].artifact("denoiser", "onnx", "fp32").path
    m = onnx.load(str(path))
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
    assert dims == {"sample": ["batch", 3, "height", "width"], "timestep": ["batch"]}
    model, _ = load_entry_point(EXAMPLE)()
    x = torch.randn(2, 3, 24, 40, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([10.0, 900.0])
    with torch.no_grad():
        ref = model(x, t).numpy()
    for fmt, runtime in (("onnx", "onnxruntime"), ("openvino", "openvino")):
        with open_artifact(tiny[0].artifact("denoiser", fmt, "fp32").path, runtime, device="cpu") as rt:
            got = rt.run({"sample": x.numpy(), "timestep": t.numpy()})["noise_pred"]
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < FP32_BAR, fmt


def test_openvino_static_variant_has_fixed_shapes(tiny):
    a = tiny[0].artifact("denoiser", "openvino", "fp16", "static")
    assert a.static_shapes == {"sample": (1, 3, 32, 32), "timestep": (1,)}
    assert a.validation["rel_l2"] < FP16_BAR
    with open_artifact(a.path, "openvino", device="cpu") as rt:
        assert [(s.name, s.shape) for s in rt.inputs] == [("sample", (1, 3, 32, 32)), ("timestep", (1,))]


def test_progress_reports_each_component_format_and_stage(tiny):
    stages = tiny[1]
    for stage in ("convert", "validate", "done"):
        assert ("denoiser", "tflite", "fp16", stage) in stages
    assert ("denoiser", "openvino", "int8-weight/static", "done") in stages
    assert stages[-1] == ("", "", "", "write")


def test_int8_static_is_calibrated_on_the_trajectory_and_validated(tmp_path):
    rep = ConvertReport(None)
    b = convert(EXAMPLE, tmp_path / "q.bundle", formats="onnx", precisions="int8", calibration_steps=12, report=rep)
    a = b.artifact("denoiser", "onnx", "int8-static")
    # QDQ activations too: ~3e-2 measured; the int8-static default bar is 0.15.
    assert a.validation["rel_l2"] < 0.08, a.validation
    assert a.validation["tolerance"] == 0.15
    assert rep.notes["denoiser onnx int8-static"][-1] == "calibrated on 36 inputs from a 12-step trajectory"
    import onnx

    ops = {n.op_type for n in onnx.load(str(a.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
