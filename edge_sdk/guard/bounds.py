"""Finite bounds for numbers that come from options, environment variables and API arguments
(hardening class 6): one UsageError naming the option, never NaN, infinity or a bool let through.

``click.FloatRange`` lets NaN pass (every comparison with NaN is false), and the Python API passes
values straight through, so each boundary that turns a number into a timeout or a count checks it here.
"""

from __future__ import annotations

import math
import os

from edge_sdk.errors import UsageError


def check_seconds(value: object, *, option: str, bounds: tuple[float, float]) -> float:
    """A finite number of seconds within ``bounds``."""
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise UsageError(f"{option}: must be a finite number of seconds from {low:g} to {high:g}, got {value!r}"[:300])
    return float(value)


def check_count(value: object, *, option: str, bounds: tuple[int, int]) -> int:
    """An integer within ``bounds`` (booleans and floats refused: 2.5 steps is a mistake, not 2)."""
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"{option}: must be an integer from {low} to {high}, got {value!r}"[:300])
    return value


def seconds_from_env(name: str, default: float, *, bounds: tuple[float, float]) -> float:
    """A timeout from environment variable ``name`` (a number of seconds), else ``default``."""
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"environment variable {name}: {text[:40]!r} is not a number of seconds") from None
    return check_seconds(value, option=f"environment variable {name}", bounds=bounds)
