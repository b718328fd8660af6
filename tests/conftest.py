"""Fixtures shared across the test tree."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_FACTORY = f"{REPO / 'examples' / 'tiny_unet.py'}:factory"

# Progress bars off; one ORT/OpenVINO thread pool size that suits the 2-core test machines.
os.environ.setdefault("EDGE_SDK_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def tiny_factory() -> str:
    """Entry point of the tiny pixel-space denoiser in examples/."""
    return TINY_FACTORY


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A pixel-space denoiser converted to ONNX fp32 (read-only: copy it before changing it)."""
    import edge_sdk

    out = tmp_path_factory.mktemp("tiny") / "tiny.bundle"
    edge_sdk.convert(TINY_FACTORY, out, formats="onnx", precisions="fp32", name="tiny")
    return out


@pytest.fixture
def tiny_bundle_copy(tiny_bundle, tmp_path) -> Path:
    import shutil

    dst = tmp_path / "copy.bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


@pytest.fixture(scope="session")
def cli():
    """Run the real `edge-sdk` console script in a subprocess: cli("run", ...)."""
    return run_cli


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300):
    """Run the real `edge-sdk` console script in a subprocess."""
    import subprocess

    exe = Path(sys.executable).with_name("edge-sdk")
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout)
