"""Known converters by format. A new format is a new module plus one line here."""

from __future__ import annotations

from importlib import import_module

from edge_sdk.converters.base import Converter
from edge_sdk.errors import UsageError

_BUILTIN = {
    "onnx": "edge_sdk.converters.onnx:OnnxConverter",
    "openvino": "edge_sdk.converters.openvino:OpenVinoConverter",
    "tflite": "edge_sdk.converters.litert:LiteRtConverter",
}
ALIASES = {"litert": "tflite", "ov": "openvino", "ir": "openvino"}


def formats() -> list[str]:
    return list(_BUILTIN)


def normalize_format(fmt: str) -> str:
    f = fmt.strip().lower()
    f = ALIASES.get(f, f)
    if f not in _BUILTIN:
        raise UsageError(f"unknown format {fmt!r}", hint=f"formats: {', '.join(formats())}, or 'all'")
    return f


def converter_class(fmt: str) -> type[Converter]:
    mod, cls = _BUILTIN[normalize_format(fmt)].split(":")
    return getattr(import_module(mod), cls)


def get_converter(fmt: str) -> Converter:
    """A fresh converter instance (it may cache exports for the life of one convert run)."""
    return converter_class(fmt)()
