"""Bounds of the numbers install and flash take (hardening class 6): timeouts, step counts, how
many releases to keep.

The CLI's click types catch most bad values, but NaN passes ``click.FloatRange`` and the Python
API and the fleet's Ansible module pass values straight through; ``subprocess.run(timeout=nan)``
would then wait forever. Each value is checked here once (edge_sdk.guard.bounds), with one UsageError
naming the option.
"""

from __future__ import annotations

from edge_sdk.guard.bounds import check_count, check_seconds

HEALTH_TIMEOUT = (0.01, 86_400.0)  # seconds: a day is far beyond any one-image check
HEALTH_STEPS = (1, 50)
KEEP = (0, 100)
FLASH_TIMEOUT = (1.0, 7 * 86_400.0)  # a week: a slow link and a big bundle, never unbounded
CONNECT_TIMEOUT = (1, 600)


def check_install_options(*, keep: object, health_steps: object, health_timeout: object) -> None:
    check_count(keep, option="keep (--keep)", bounds=KEEP)
    check_count(health_steps, option="health_steps (--health-steps)", bounds=HEALTH_STEPS)
    check_seconds(health_timeout, option="health_timeout (--health-timeout)", bounds=HEALTH_TIMEOUT)
