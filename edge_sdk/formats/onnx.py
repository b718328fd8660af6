"""ONNX: one .onnx protobuf, optionally with external-data weight files beside it."""

from __future__ import annotations

import os

from edge_sdk.formats.base import FormatSpec


def check(path: str | os.PathLike) -> None:
    """The protobuf framing walk and external-data rules (``edge_sdk.guard.modelcheck``)."""
    from edge_sdk.guard.modelcheck import check_onnx_file

    check_onnx_file(path)


FORMAT = FormatSpec(name="onnx", suffix=".onnx", check=check, converter="edge_sdk.converters.onnx:OnnxConverter",
                    rank=10)
