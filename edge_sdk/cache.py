"""The user cache folder: converted demo bundles, memory probes, compiled OpenVINO models, fleet state.

One root, one variable: ``$EDGE_SDK_CACHE``, else ``$XDG_CACHE_HOME/edge-sdk``, else
``~/.cache/edge-sdk``. ``EDGE_SDK_CACHE_DIR`` (the memory probes' variable before there was one
root) is still read when ``EDGE_SDK_CACHE`` is unset; it is deprecated (docs/boards.md).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "EDGE_SDK_CACHE"
DEPRECATED_CACHE_ENV = "EDGE_SDK_CACHE_DIR"


def cache_dir(*parts: str) -> Path:
    """The cache root, or the folder ``parts`` below it (not created here)."""
    env = os.environ.get(CACHE_ENV) or os.environ.get(DEPRECATED_CACHE_ENV)
    if env:
        root = Path(env).expanduser()
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-sdk"
    return root.joinpath(*parts)
