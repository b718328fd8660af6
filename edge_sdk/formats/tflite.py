"""TFLite / LiteRT: one flatbuffer file."""

from __future__ import annotations

import os

from edge_sdk.formats.base import FormatSpec


def check(path: str | os.PathLike) -> None:
    """The LiteRT adapter's flatbuffer bounds check (``edge_sdk.runtimes.tflite_check``)."""
    from edge_sdk.runtimes.tflite_check import verify_tflite

    verify_tflite(path)


FORMAT = FormatSpec(name="tflite", suffix=".tflite", check=check,
                    converter="edge_sdk.converters.litert:LiteRtConverter", aliases=("litert",), rank=30)
