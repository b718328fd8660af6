"""A new format, "ronnx": ONNX bytes in a file named *.ronnx. Its descriptor, its converter (the
ONNX converter's export, renamed) and the runtime that opens it, all outside edge-sdk.
The converter sits in its own module: it imports torch, and the device side never does."""

from __future__ import annotations

from edge_sdk.formats.base import FormatSpec
from edge_sdk.guard.modelcheck import check_onnx_file
from edge_sdk_example_plugin.ortwrap import OrtWrapRuntime

FORMAT = FormatSpec(name="ronnx", suffix=".ronnx", check=check_onnx_file,
                    converter="edge_sdk_example_plugin.ronnx_convert:RenamedOnnxConverter")


class RenamedOnnxRuntime(OrtWrapRuntime):
    name = "ronnxrt"
    formats = ("ronnx",)
