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
import time
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
    """The text-conditioned latent diffusion bundle (ONNX fp32): text encoder, denoiser, decoder."""
    import edge_sdk

    work = tmp_path_factory.mktemp("serve")
    spec, _ = _pipeline_builders().build_text_spec(work)
    del spec.components["encoder"]  # img2img's VAE encoder: nothing here uses it (saves its conversion)
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0, model: str | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    path = f"/v2/models/{model}/ready" if model else "/v2/health/ready"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {timeout} s")


@pytest.fixture(scope="session")
def mlserver_denoiser(serve_bundle, tmp_path_factory):
    """A real MLServer (own venv) serving the bundle's denoiser through tests/serve/mlserver_runtime.

    Yields (url, log path): the runtime appends every request it received to the log.
    """
    import shutil

    from edge_sdk.bundle import Bundle

    spec = importlib.util.spec_from_file_location("_mlserver_env", HERE / "mlserver_env.py")
    mlserver_env = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mlserver_env)
    exe = mlserver_env.ensure_mlserver()
    root = tmp_path_factory.mktemp("mlserver")
    model_dir = root / "denoiser"
    model_dir.mkdir()
    shutil.copy(HERE / "mlserver_runtime" / "edge_denoiser_runtime.py", model_dir)
    b = Bundle.open(serve_bundle)
    ins, outs = b.signature("denoiser")
    from edge_sdk.serve.v2 import tensor_metadata

    log = root / "received.jsonl"
    (model_dir / "model-settings.json").write_text(json.dumps({
        "name": "denoiser", "implementation": "edge_denoiser_runtime.OnnxComponent",
        "inputs": tensor_metadata(ins), "outputs": tensor_metadata(outs),
        "parameters": {"uri": str(b.artifact("denoiser", "onnx", "fp32").path), "extra": {"log": str(log)}}}))
    http, grpc, metrics = free_port(), free_port(), free_port()
    (root / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http, "grpc_port": grpc, "metrics_port": metrics,
        "parallel_workers": 0, "debug": False}))
    err = tempfile.TemporaryFile("w+")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.Popen([str(exe), "start", str(root)], stdout=err, stderr=err, cwd=root, env=env)
    url = f"http://127.0.0.1:{http}"
    try:
        wait_ready(url, proc, model="denoiser")
    except RuntimeError as e:
        proc.kill()
        err.seek(0)
        raise RuntimeError(f"{e}: {err.read()[-3000:]}") from None
    yield url, log
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
