"""Fault-injection points for the interruption tests.

``kill_point("commit:manifest")`` kills the process with SIGKILL when the environment variable
``EDGE_SDK_TEST_KILL_AT`` names that stage, so tests can show that a convert (stages below) or an
install (``edge_sdk.deploy.install.STAGES``) killed at that exact moment leaves either the old
state or the new complete one. Unset (always, outside tests), it
costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "EDGE_SDK_TEST_KILL_AT"
# Every named point, in the order a convert reaches them (tests iterate over this tuple).
STAGES = (
    "convert:artifact",   # an artifact's files are written in the temporary folder
    "commit:manifest",    # manifest.json is written in the temporary folder, not yet synced
    "commit:synced",      # the temporary folder is fsynced, not yet renamed into place
    "commit:renamed",     # the new bundle is in place; the old one is not yet removed
)


def kill_point(stage: str) -> None:
    """Die here, uncatchably, if the tests asked for it."""
    if os.environ.get(ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)
