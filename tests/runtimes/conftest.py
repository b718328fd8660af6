"""Fixtures for the runtime tests: one tiny denoiser converted to ONNX, OpenVINO IR and TFLite once."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_torch():
    """(module, example inputs) of examples/tiny_unet.py: the torch model behind ``tri_bundle``."""
    spec = importlib.util.spec_from_file_location("edge_sdk_example_tiny_unet", REPO / "examples" / "tiny_unet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.factory()


@pytest.fixture(scope="session")
def tri_bundle(tmp_path_factory, tiny_factory) -> Path:
    """The tiny denoiser as a bundle with fp32 onnx + openvino + tflite artifacts (read-only)."""
    import edge_sdk

    out = tmp_path_factory.mktemp("tri") / "tri.bundle"
    # One validation sample per artifact: the runtime tests below compare against torch themselves.
    edge_sdk.convert(tiny_factory, out, formats="onnx,openvino,tflite", precisions="fp32", name="tiny-tri", samples=1)
    return out


@pytest.fixture(scope="session")
def tri_paths(tri_bundle) -> dict[str, Path]:
    from edge_sdk.bundle import Bundle

    b = Bundle.open(tri_bundle)
    return {fmt: b.artifact("denoiser", fmt, "fp32").path for fmt in ("onnx", "openvino", "tflite")}
