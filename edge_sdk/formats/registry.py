"""Finding formats: the ``edge_sdk.formats`` entry point group, built-in descriptors included."""

from __future__ import annotations

import os
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path

from edge_sdk.errors import UsageError
from edge_sdk.formats.base import FormatSpec

GROUP = "edge_sdk.formats"
_extra: dict[str, FormatSpec] = {}


def register_format(spec: FormatSpec) -> None:
    """Register a descriptor in-process (entry points are the normal way; this is for apps and tests)."""
    _extra[spec.name] = spec


@lru_cache(maxsize=1)
def _installed() -> tuple[FormatSpec, ...]:
    # Read once per process: preflight asks on every session open.
    found = []
    for ep in entry_points(group=GROUP):
        try:
            spec = ep.load()
        except Exception:  # noqa: BLE001 - a broken plugin must not hide the other formats
            continue
        if isinstance(spec, FormatSpec):
            found.append(spec)
    return tuple(found)


def _all() -> dict[str, FormatSpec]:
    found = {spec.name: spec for spec in _installed()}
    found.update(_extra)
    return dict(sorted(found.items(), key=lambda kv: (kv[1].rank, kv[0])))


def format_names() -> list[str]:
    """Every registered format, preferred first (rank, then name)."""
    return list(_all())


def get_format(name: str) -> FormatSpec:
    """The descriptor of ``name`` or one of its aliases (case-insensitive)."""
    specs = _all()
    key = name.strip().lower()
    for spec in specs.values():
        if key == spec.name or key in spec.aliases:
            return spec
    raise UsageError(f"unknown format {name!r}", hint=f"formats: {', '.join(specs)}, or 'all'")


def default_format() -> str:
    """The format written when none is asked for: the lowest-ranked one."""
    return next(iter(_all()))


def format_for_path(path: str | os.PathLike) -> FormatSpec | None:
    """The format whose entry suffix ``path`` has, or None."""
    suffix = Path(path).suffix.lower()
    return next((s for s in _all().values() if s.suffix == suffix), None)
