"""What a failed convert says, and that it writes nothing."""

from __future__ import annotations

import re

import pytest
import torch

from edge_sdk.converters.convert import ConvertReport, convert
from edge_sdk.converters.precision import check_supported, normalize, support_matrix
from edge_sdk.errors import UnsupportedOpError, UsageError, ValidationError


class WithDeterminant(torch.nn.Module):
    """torch.linalg.det: ONNX has Det; LiteRT has no lowering for it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y * torch.linalg.det(y[:, 0, :4, :4])[:, None, None, None]


def _source():
    torch.manual_seed(0)
    return WithDeterminant().eval(), {"x": torch.randn(1, 3, 8, 8)}


@pytest.mark.slow
def test_unsupported_op_names_op_node_format_and_the_formats_that_worked(tmp_path):
    out = tmp_path / "det.bundle"
    with pytest.raises(UnsupportedOpError) as ei:
        convert(_source(), out, formats="onnx,tflite")
    msg = ei.value.message
    assert "tflite cannot express operator aten._linalg_det" in msg
    assert re.search(r"\(node _?linalg_det", msg), msg  # the graph node that computes it
    assert "converted by: onnx" in msg
    assert not out.exists()  # all-or-nothing


@pytest.mark.slow
def test_keep_going_writes_the_formats_that_converted(tmp_path):
    rep = ConvertReport(None)
    b = convert(_source(), tmp_path / "det.bundle", formats="onnx,tflite", keep_going=True, report=rep)
    assert [a.format for a in b.artifacts("denoiser")] == ["onnx"]
    assert b.artifact("denoiser", "onnx", "fp32").validation["rel_l2"] < 1e-4  # fp32 bar
    assert [(f.format, type(f.error).__name__) for f in rep.failures] == [("tflite", "UnsupportedOpError")]


def test_over_tolerance_fails_naming_component_format_precision_and_figure(tmp_path):
    # A bar below what int8 weights can reach (~5e-3 measured for this model) must fail.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.SiLU(),
                              torch.nn.Conv2d(32, 3, 3, padding=1))
    out = tmp_path / "t.bundle"
    with pytest.raises(ValidationError) as ei:
        convert((net.eval(), torch.randn(1, 3, 8, 8)), out, formats="onnx", precisions="int8-weight", tolerance=1e-7)
    assert ei.value.message.startswith("denoiser onnx int8-weight: relative L2 error ")
    assert "over the int8-weight tolerance 1e-07" in ei.value.message
    assert not out.exists()


def test_precision_names_and_support_matrix():
    assert normalize("int8") == "int8-static" and normalize("FP16") == "fp16"
    with pytest.raises(UsageError, match="unknown precision 'int4'"):
        normalize("int4")
    m = support_matrix()
    assert set(m) == {"onnx", "openvino", "tflite"}
    assert all(set(v) == {"fp32", "fp16", "int8-weight", "int8-static"} for v in m.values())
    check_supported("onnx", "fp16")
    with pytest.raises(UsageError, match="unknown format 'coreml'"):
        convert(_source(), "/nonexistent/x", formats="coreml")
