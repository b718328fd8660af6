"""Known converters by format: each format descriptor (``edge_sdk.formats``) names its converter."""

from __future__ import annotations

from importlib import import_module

from edge_sdk.converters.base import Converter
from edge_sdk.errors import UsageError
from edge_sdk.formats.registry import format_names, get_format


def formats() -> list[str]:
    return format_names()


def normalize_format(fmt: str) -> str:
    return get_format(fmt).name


def converter_class(fmt: str) -> type[Converter]:
    spec = get_format(fmt)
    mod, _, cls = spec.converter.partition(":")
    module = import_module(mod)  # an ImportError (torch missing) keeps its own meaning for the caller
    try:
        found = getattr(module, cls)
    except AttributeError as e:
        raise UsageError(f"format {spec.name!r}: its converter {spec.converter} cannot be loaded ({e})",
                         hint="install or fix the package that provides the format") from None
    if not (isinstance(found, type) and issubclass(found, Converter)):
        raise UsageError(f"format {spec.name!r}: {spec.converter} is not an edge_sdk Converter subclass")
    return found


def get_converter(fmt: str) -> Converter:
    """A fresh converter instance (it may cache exports for the life of one convert run)."""
    return converter_class(fmt)()
