"""Fixtures for the deploy tests: bundle variants, packages, and a real OpenSSH server on 127.0.0.1."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge_sdk.guard.fsutil import sha256_file

EDGE_SDK = str(Path(sys.executable).with_name("edge-sdk"))


def _rehash(bundle: Path, rel: str) -> None:
    """Record the new size and sha256 of ``rel`` in the bundle's manifest (after we changed it)."""
    mpath = bundle / "manifest.json"
    m = json.loads(mpath.read_text())
    p = bundle / rel
    for comp in m["components"].values():
        for rec in [f for a in comp["artifacts"] for f in a["files"]] + comp.get("extra_files", []):
            if rec["path"] == rel:
                rec["size"], rec["sha256"] = p.stat().st_size, sha256_file(p)
    mpath.write_text(json.dumps(m, indent=2))


def make_variant(src: Path, dst: Path, *, name: str, payload: int = 0, nan: bool = False) -> Path:
    """A copy of bundle ``src`` renamed ``name`` (so it packages to a new release id).

    ``payload``: add an incompressible extra file of that many bytes (to make uploads slow enough
    to cut). ``nan``: make the denoiser's output NaN (the ONNX graph multiplies it by NaN), a model
    that loads and runs but fails the install health check.
    """
    shutil.copytree(src, dst)
    mpath = dst / "manifest.json"
    m = json.loads(mpath.read_text())
    m["name"] = name
    if payload:
        rel = "denoiser/payload.bin"
        data = os.urandom(payload)
        (dst / rel).write_bytes(data)
        m["components"]["denoiser"].setdefault("extra_files", []).append(
            {"path": rel, "size": len(data), "sha256": sha256_file(dst / rel)})
    mpath.write_text(json.dumps(m, indent=2))
    if nan:
        import numpy as np
        import onnx
        from onnx import helper, numpy_helper

        rel = m["components"]["denoiser"]["artifacts"][0]["entry"]
        model = onnx.load(str(dst / rel))
        out = model.graph.output[0].name
        for node in model.graph.node:
            node.output[:] = [f"{o}__pre" if o == out else o for o in node.output]
        model.graph.initializer.append(numpy_helper.from_array(np.array(np.nan, dtype=np.float32), "nan__const"))
        model.graph.node.append(helper.make_node("Mul", [f"{out}__pre", "nan__const"], [out]))
        onnx.save(model, str(dst / rel))
        _rehash(dst, rel)
    return dst


@pytest.fixture(scope="session")
def variants(tiny_bundle, tmp_path_factory):
    """make(name, **kw) -> bundle folder; cached per (name, kw) for the session."""
    base = tmp_path_factory.mktemp("variants")
    cache: dict[tuple, Path] = {}

    def make(name: str, **kw) -> Path:
        key = (name, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = make_variant(tiny_bundle, base / f"{name}-{len(cache)}.bundle", name=name, **kw)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def packages(variants, tmp_path_factory):
    """pkg(name, **kw) -> a .tar package of that variant for board 'test-board' (cached)."""
    import warnings

    from edge_sdk.deploy import package

    base = tmp_path_factory.mktemp("packages")
    cache: dict[tuple, Path] = {}

    def pkg(name: str, *, sign_key: Path | None = None, **kw) -> Path:
        key = (name, str(sign_key), tuple(sorted(kw.items())))
        if key not in cache:
            out = base / f"{name}-{len(cache)}.tar"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # 'test-board' has no profile: expected
                package(variants(name, **kw), "test-board", out, sign_key=sign_key)
            cache[key] = out
        return cache[key]

    return pkg


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs: a real full disk (needs root and mount permission; skipped elsewhere)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# -- a real OpenSSH server ---------------------------------------------------------------------
@dataclass
class Board:
    """A local sshd playing the board, and the flash() arguments that reach it."""

    host: str
    port: int
    identity: str
    ssh_config: str
    known_hosts: str
    options: list[str] = field(default_factory=list)

    def kwargs(self, **extra) -> dict:
        return {"port": self.port, "identity": self.identity, "ssh_config": self.ssh_config,
                "ssh_options": list(self.options), "remote_edge_sdk": EDGE_SDK, **extra}

    def cli_args(self) -> list[str]:
        args = ["--host", self.host, "--port", str(self.port), "-i", self.identity, "-F", self.ssh_config,
                "--remote-edge-sdk", EDGE_SDK]
        for o in self.options:
            args += ["-o", o]
        return args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sshd_binary() -> str | None:
    for cand in (shutil.which("sshd"), "/usr/sbin/sshd", "/usr/local/sbin/sshd"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """sshd -D on 127.0.0.1:<free port> with throwaway host and user keys; yields a Board."""
    binary = _sshd_binary()
    if binary is None or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        pytest.skip("OpenSSH server/client not installed (apt-get install openssh-server openssh-client rsync)")
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edge-sdk-test", "-f", str(d / key)],
                       check=True)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    os.chmod(d / "user_key", 0o600)
    config = d / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1", f"HostKey {d / 'host_key'}", f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}", "PermitRootLogin yes", "StrictModes no", "UsePAM no",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
        "LogLevel ERROR", "MaxSessions 20", "MaxStartups 20:30:60", ""]))
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # Debian's privilege-separation folder
    port = _free_port()
    log = open(d / "sshd.log", "wb")
    proc = subprocess.Popen([binary, "-D", "-e", "-f", str(config), "-p", str(port)], stdout=log, stderr=log)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()[-2000:]}")
            time.sleep(0.1)
    known = d / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {(d / 'host_key.pub').read_text()}")
    ssh_config = d / "ssh_config"
    ssh_config.write_text("")  # -F: never read the user's ~/.ssh/config
    board = Board(host=f"{getpass.getuser()}@127.0.0.1", port=port, identity=str(d / "user_key"),
                  ssh_config=str(ssh_config), known_hosts=str(known),
                  options=[f"UserKnownHostsFile={known}", "GlobalKnownHostsFile=/dev/null",
                           "StrictHostKeyChecking=yes", "IdentitiesOnly=yes"])
    try:
        yield board
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
