"""Precision names and the format x precision support matrix (data the CLI prints and errors cite)."""

from __future__ import annotations

from collections.abc import Iterable

from edge_sdk.errors import UsageError
from edge_sdk.planning.plan import PRECISION_ORDER

PRECISIONS = PRECISION_ORDER  # the one list of names (edge_sdk/planning/plan.py)
# What users may type; the CLI's `--precision int8` means the calibrated, activations-too kind.
ALIASES = {"int8": "int8-static", "int8w": "int8-weight", "int8-dynamic": "int8-weight", "float32": "fp32",
           "float16": "fp16", "f32": "fp32", "f16": "fp16"}


def normalize(precision: str) -> str:
    p = precision.strip().lower()
    p = ALIASES.get(p, p)
    if p not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}",
                         hint=f"precisions: {', '.join(PRECISIONS)} (int8 = int8-static)")
    return p


def normalize_all(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        p = normalize(v)
        if p not in out:
            out.append(p)
    return out


def support_matrix() -> dict[str, dict[str, str]]:
    """{format: {precision: how it is made}}; a precision missing from a format is not supported."""
    from edge_sdk.converters.registry import converter_class, formats

    return {f: dict(converter_class(f).methods) for f in formats()}


def check_supported(fmt: str, precision: str) -> None:
    """Raise a UsageError naming the formats that can make ``precision`` if ``fmt`` cannot."""
    matrix = support_matrix()
    if precision in matrix.get(fmt, {}):
        return
    others = [f for f, m in matrix.items() if precision in m]
    raise UsageError(f"the {fmt} converter cannot make {precision} artifacts",
                     hint=f"{fmt} makes {', '.join(matrix.get(fmt, {})) or 'nothing'}; "
                          f"{precision} is made by {', '.join(others) or 'no format'} (see `edge-sdk formats`)")
