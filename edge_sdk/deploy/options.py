"""Bounds of the numbers install and flash take (hardening class 6): timeouts, step counts, how
many releases to keep.

The CLI's click types catch most bad values, but NaN passes ``click.FloatRange`` (every comparison
with NaN is false) and the Python API and the fleet's Ansible module pass values straight through;
``subprocess.run(timeout=nan)`` would then wait forever. Each value is checked here once, with
one UsageError naming the option.
"""

from __future__ import annotations

import math

from edge_sdk.errors import UsageError

HEALTH_TIMEOUT = (0.01, 86_400.0)  # seconds: a day is far beyond any one-image check
HEALTH_STEPS = (1, 50)
KEEP = (0, 100)
FLASH_TIMEOUT = (1.0, 7 * 86_400.0)  # a week: a slow link and a big bundle, never unbounded
CONNECT_TIMEOUT = (1, 600)


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


def check_install_options(*, keep: object, health_steps: object, health_timeout: object) -> None:
    check_count(keep, option="keep (--keep)", bounds=KEEP)
    check_count(health_steps, option="health_steps (--health-steps)", bounds=HEALTH_STEPS)
    check_seconds(health_timeout, option="health_timeout (--health-timeout)", bounds=HEALTH_TIMEOUT)
