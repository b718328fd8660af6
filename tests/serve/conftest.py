"""A real text-to-image bundle (tests/pipelines' tiny CLIP + UNet + VAE, converted once) and a real
`edge-sdk serve` process on 127.0.0.1 for the serve and remote tests."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _pipeline_builders():
    # conftest modules are not importable by name under --import-mode=importlib: load it by path.
    spec = importlib.util.spec_from_file_location("_pipelines_conftest", HERE.parent / "pipelines" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def serve_bundle(tmp_path_factory) -> Path:
    """The text-conditioned latent diffusion bundle (ONNX fp32): text encoder, denoiser, decoder, encoder."""
    import edge_sdk

    work = tmp_path_factory.mktemp("serve")
    spec, _ = _pipeline_builders().build_text_spec(work)
    return edge_sdk.convert(spec, work / "text.bundle").root


class ServeProcess:
    """`edge-sdk serve ... --port 0 --json` in a subprocess; ``url`` from the line it prints."""

    def __init__(self, bundle: Path, *args: str, env: dict[str, str] | None = None) -> None:
        exe = Path(sys.executable).with_name("edge-sdk")
        self._err = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty server never blocks on it
        self.proc = subprocess.Popen([str(exe), "serve", str(bundle), "--port", "0", "--json", "--log-level", "warning",
                                      *args], stdout=subprocess.PIPE, stderr=self._err, text=True,
                                     env={**os.environ, **(env or {})})
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            err = self.stderr()
            raise RuntimeError(f"edge-sdk serve did not start (rc {self.proc.wait()}): {err}")
        self.info = json.loads(line)
        self.url = self.info["url"]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read()


@pytest.fixture(scope="session")
def serve_factory():
    started: list[ServeProcess] = []

    def start(bundle: Path, *args: str, env: dict[str, str] | None = None) -> ServeProcess:
        p = ServeProcess(bundle, *args, env=env)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop(signal.SIGKILL if p.proc.poll() is None else signal.SIGTERM, timeout=10)
