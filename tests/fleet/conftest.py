"""A fleet of real sshd instances on 127.0.0.1 (one port and one install root each) and its inventory."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

EDGE_SDK = str(Path(sys.executable).with_name("edge-sdk"))
# Ansible's modules run under the host's system Python, as on a board; edge-sdk lives in its own venv.
PY = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
# Two board kinds: the package differs per board (requirements), so each kind is a different release.
BOARDS = {"pi-a": "rpi4-4gb", "pi-b": "rpi4-4gb", "jet-a": "jetson-orin-nano-8gb"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Host:
    name: str
    board: str
    port: int
    root: Path
    config: Path
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("sshd") or "/usr/sbin/sshd"
        self.proc = subprocess.Popen([binary, "-D", "-e", "-f", str(self.config), "-p", str(self.port)],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    pytest.fail(f"sshd for {self.name} did not start: {self.log.read_text()[-2000:]}")
                time.sleep(0.1)

    def stop(self) -> None:
        """Take the host off the network: the listener and every session it forked (Ansible's
        ControlPersist master connections would otherwise keep a 'stopped' host reachable)."""
        import psutil

        if self.proc is not None and self.proc.poll() is None:
            sessions = psutil.Process(self.proc.pid).children(recursive=True)
            self.proc.terminate()
            for child in sessions:
                try:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def current(self) -> str | None:
        link = self.root / "current"
        return os.readlink(link).rsplit("/", 1)[-1] if link.is_symlink() else None

    def releases(self) -> list[str]:
        d = self.root / "releases"
        return sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else []

    def staged(self) -> list[str]:
        d = self.root / "staging"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


@dataclass
class Fleet:
    hosts: dict[str, Host]
    inventory: Path
    state_dir: Path
    env: dict[str, str]

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([EDGE_SDK, *args], capture_output=True, text=True, env=self.env, timeout=timeout,
                              stdin=subprocess.DEVNULL)


def write_inventory(path: Path, hosts: dict[str, Host], key: Path, known: Path, extra: dict | None = None) -> Path:
    """A YAML inventory (JSON is YAML): two groups by board kind, connection settings as Ansible's own vars."""
    groups: dict[str, dict] = {}
    for h in hosts.values():
        g = groups.setdefault(h.board.replace("-", "_"), {"hosts": {}, "vars": {"edge_sdk_board": h.board}})
        g["hosts"][h.name] = {"ansible_port": h.port, "edge_sdk_root": str(h.root)}
    inv = {"all": {
        "vars": {"ansible_host": "127.0.0.1", "ansible_user": getpass.getuser(),
                 "ansible_ssh_private_key_file": str(key),
                 "ansible_ssh_common_args": f"-F /dev/null -o UserKnownHostsFile={known} "
                                            "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes "
                                            "-o IdentitiesOnly=yes",
                 "ansible_python_interpreter": PY, "ansible_pipelining": True, "edge_sdk_executable": EDGE_SDK,
                 **(extra or {})},
        "children": groups}}
    path.write_text(json.dumps(inv, indent=2))
    return path


@pytest.fixture(scope="session")
def fleet(tmp_path_factory):
    """Three sshd on 127.0.0.1 (pi-a, pi-b: rpi4-4gb; jet-a: jetson-orin-nano-8gb), each its own root."""
    if not (shutil.which("sshd") or os.access("/usr/sbin/sshd", os.X_OK)) or not shutil.which("ssh"):
        pytest.skip("OpenSSH server/client not installed (apt-get install openssh-server openssh-client rsync)")
    if not Path(sys.executable).with_name("ansible-playbook").exists() and not shutil.which("ansible-playbook"):
        pytest.skip("ansible-core not installed (pip install 'edge-sdk[fleet]')")
    d = tmp_path_factory.mktemp("fleet")
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    os.chmod(d / "user_key", 0o600)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    hosts: dict[str, Host] = {}
    known_lines = []
    for name, board in BOARDS.items():
        port = _free_port()
        cfg = d / f"sshd_{name}.conf"
        cfg.write_text("\n".join([
            "ListenAddress 127.0.0.1", f"HostKey {d / 'host_key'}", f"PidFile {d / f'sshd_{name}.pid'}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}", "PermitRootLogin yes", "StrictModes no", "UsePAM no",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "LogLevel ERROR", "MaxSessions 20", "MaxStartups 20:30:60", "Subsystem sftp internal-sftp", ""]))
        hosts[name] = Host(name, board, port, d / f"root-{name}", cfg, d / f"sshd_{name}.log")
        known_lines.append(f"[127.0.0.1]:{port} {(d / 'host_key.pub').read_text().strip()}")
    (d / "known_hosts").write_text("\n".join(known_lines) + "\n")
    inventory = write_inventory(d / "inventory.yml", hosts, d / "user_key", d / "known_hosts")
    # Ansible's own state (ssh control sockets, tmp) in the test folder, not in the user's ~/.ansible.
    env = {**os.environ, "ANSIBLE_HOME": str(d / "ansible-home"), "ANSIBLE_LOCAL_TEMP": str(d / "ansible-tmp"),
           "EDGE_SDK_NO_PROGRESS": "1"}
    for h in hosts.values():
        h.start()
    try:
        yield Fleet(hosts, inventory, d / "state", env)
    finally:
        for h in hosts.values():
            h.stop()


@pytest.fixture(scope="session")
def fleet_bundles(tiny_bundle, tmp_path_factory):
    """v1 and v2 (good, different releases) and bad (loads and runs, but generates NaN)."""
    from edge_sdk.guard.fsutil import sha256_file

    base = tmp_path_factory.mktemp("fleet-bundles")
    out = {}
    for name in ("v1", "v2", "bad"):
        dst = base / f"{name}.bundle"
        shutil.copytree(tiny_bundle, dst)
        m = json.loads((dst / "manifest.json").read_text())
        m["name"] = f"tiny-{name}"
        if name == "bad":  # the denoiser's output times NaN: a release that must fail its health check
            import numpy as np
            import onnx
            from onnx import helper, numpy_helper

            rel = m["components"]["denoiser"]["artifacts"][0]["entry"]
            model = onnx.load(str(dst / rel))
            o = model.graph.output[0].name
            for node in model.graph.node:
                node.output[:] = [f"{x}__pre" if x == o else x for x in node.output]
            model.graph.initializer.append(numpy_helper.from_array(np.array(np.nan, dtype=np.float32), "nan__c"))
            model.graph.node.append(helper.make_node("Mul", [f"{o}__pre", "nan__c"], [o]))
            onnx.save(model, str(dst / rel))
            for comp in m["components"].values():
                for rec in [f for a in comp["artifacts"] for f in a["files"]]:
                    if rec["path"] == rel:
                        rec["size"], rec["sha256"] = (dst / rel).stat().st_size, sha256_file(dst / rel)
        (dst / "manifest.json").write_text(json.dumps(m, indent=2))
        out[name] = dst
    return out
