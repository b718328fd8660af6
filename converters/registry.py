"""Known converters by format. A new format is a new module plus one line here."""

from __future__ import annotations

from importlib import import_module

from edge_sdk.converters.base import Converter
from edge_sdk.errors import UsageError

_BUILTIN = {
    "onnx": "edge_sdk.converters.onnx:OnnxConverter",
}


def formats() -> list[str]:
    return list(_BUILTIN)


def get_converter(fmt: str) -> Converter:
    if fmt not in _BUILTIN:
        raise UsageError(f"unknown format {fmt!r}", hint=f"formats: {', '.join(formats())}, or 'all'")
    mod, cls = _BUILTIN[fmt].split(":")
    return getattr(import_module(mod), cls)()
