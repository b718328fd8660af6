"""`flash` against a real OpenSSH server on 127.0.0.1 (this machine plays the board)."""

from __future__ import annotations

import configparser
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time

import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.deploy import current_release, flash, install, read_package
from edge_sdk.errors import DeployError, IntegrityError

pytestmark = [pytest.mark.ssh, pytest.mark.slow]  # a real OpenSSH server per test: seconds each
EDGE_SDK = os.path.join(os.path.dirname(sys.executable), "edge-sdk")


def _staged(root):
    d = root / "staging"
    return sorted(d.iterdir()) if d.is_dir() else []


class CurrentWatcher(threading.Thread):
    """Resolves and verifies `current` in a loop, as an app on the board would; records any failure."""

    def __init__(self, root):
        super().__init__(daemon=True)
        self.root, self.stop, self.failures, self.seen = root, threading.Event(), [], set()

    def run(self):
        while not self.stop.is_set():
            try:
                rid = current_release(self.root)
                Bundle.open(self.root / "releases" / rid / "bundle", verify=True)
                self.seen.add(rid)
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                self.failures.append(repr(e))
            time.sleep(0.02)


def test_flash_installs_and_reports_current(sshd, packages, tmp_path):
    root = tmp_path / "board"
    pkg = packages("fl-one")
    s = flash(pkg, sshd.host, root=str(root), health_check=True, **sshd.kwargs())
    assert s["status"] == "installed" and s["release"] == read_package(pkg).release_id
    assert s["root"] == str(root) and s["name"] == "fl-one"
    assert s["health"]["shape"] == [1, 32, 32, 3]
    assert s["bytes_sent"] > 0 and s["resumed_from"] == 0
    assert current_release(root) == s["release"]
    Bundle.open(root / "current" / "bundle", verify=True)
    assert _staged(root) == []  # the upload is removed once installed
    # The CLI, with the ssh-only transfer: reports what is now current and what it replaced.
    p = subprocess.run([EDGE_SDK, "flash", str(packages("fl-two")), "--root", str(root), "--transfer", "ssh",
                        "--json", *sshd.cli_args()], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["previous"] == s["release"] and out["transfer"] == "ssh"
    assert current_release(root) == out["release"] == read_package(packages("fl-two")).release_id


@pytest.mark.parametrize("transfer", ["rsync", "ssh"])
def test_killed_upload_resumes_and_current_never_breaks(sshd, packages, tmp_path, transfer):
    if transfer == "rsync" and not __import__("shutil").which("rsync"):
        pytest.skip("rsync not installed")
    root = tmp_path / "board"
    old = install(packages("cut-old"), root, check_runtimes=False)["release"]
    pkg = packages("cut-new", payload=3_000_000)
    size = pkg.stat().st_size
    watcher = CurrentWatcher(root)
    watcher.start()
    cmd = [EDGE_SDK, "flash", str(pkg), "--root", str(root), "--transfer", transfer, "--bwlimit", "300",
           "-q", *sshd.cli_args()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:  # cut the link once a few hundred KB have reached the board
            got = max((p.stat().st_size for p in _staged(root) if p.is_file()), default=0)
            if got >= 400_000:
                break
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # flash, its rsync/ssh children: the whole group we started
        proc.wait()
    # The board-side receiver notices the cut and keeps what it has; wait until it settles.
    deadline = time.monotonic() + 20
    while True:
        files = _staged(root)
        if len(files) == 1 and not files[0].name.startswith("."):
            before = files[0].stat().st_size
            time.sleep(0.5)
            if files[0].exists() and files[0].stat().st_size == before:
                break
        assert time.monotonic() < deadline, [f.name for f in files]
        time.sleep(0.1)
    assert 0 < before < size
    assert current_release(root) == old  # the board still runs the old release, whole
    s = flash(pkg, sshd.host, root=str(root), transfer=transfer, **sshd.kwargs())
    watcher.stop.set()
    watcher.join()
    assert s["resumed_from"] == before
    if transfer == "ssh":
        assert s["bytes_sent"] == size - before  # exactly the missing bytes
    else:  # rsync sends the missing bytes plus its block checksums and headers
        assert s["bytes_sent"] < size - before + 100_000
    assert current_release(root) == s["release"] != old
    Bundle.open(root / "current" / "bundle", verify=True)
    assert watcher.failures == [] and watcher.seen >= {old}


def test_tampered_package_is_refused_and_old_stays(sshd, packages, tmp_path):
    root = tmp_path / "board"
    old = flash(packages("tam-old"), sshd.host, root=str(root), **sshd.kwargs())["release"]
    raw = bytearray(packages("tam-new").read_bytes())
    with tarfile.open(packages("tam-new")) as tf:
        m = next(m for m in tf.getmembers() if m.name.endswith(".onnx"))
    raw[m.offset_data + 1000] ^= 0x20
    bad = tmp_path / "tampered.tar"
    bad.write_bytes(bytes(raw))
    with pytest.raises(DeployError, match=r"install on .* failed: .*model.onnx fails its sha256 check; "
                                          rf".* still runs release {old}"):
        flash(bad, sshd.host, root=str(root), **sshd.kwargs())
    assert current_release(root) == old
    Bundle.open(root / "current" / "bundle", verify=True)
    assert sorted(p.name for p in (root / "releases").iterdir()) == [old]
    assert _staged(root) == []  # a refused upload is not kept


def test_signature_is_checked_on_the_board(sshd, packages, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    keys = {}
    for name in ("publisher", "stranger"):
        k = ed25519.Ed25519PrivateKey.generate()
        (tmp_path / name).write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
        (tmp_path / f"{name}.pub").write_bytes(k.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        keys[name] = tmp_path / name
    root = tmp_path / "board"
    signed = packages("sig-pkg", sign_key=keys["stranger"])
    with pytest.raises(DeployError, match="signature does not verify: it was signed by key"):
        flash(signed, sshd.host, root=str(root), remote_verify_key=str(tmp_path / "publisher.pub"), **sshd.kwargs())
    assert current_release(root) is None
    with pytest.raises(IntegrityError, match="signature does not verify"):  # checked here before uploading too
        flash(signed, sshd.host, root=str(root), verify_key=str(tmp_path / "publisher.pub"), **sshd.kwargs())
    ok = packages("sig-pkg", sign_key=keys["publisher"])
    s = flash(ok, sshd.host, root=str(root), remote_verify_key=str(tmp_path / "publisher.pub"), **sshd.kwargs())
    assert current_release(root) == s["release"]


def test_failing_health_check_keeps_the_old_release(sshd, packages, tmp_path):
    root = tmp_path / "board"
    old = flash(packages("hf-old"), sshd.host, root=str(root), **sshd.kwargs())["release"]
    with pytest.raises(DeployError, match=r"health check .* failed: .*NaN.*still runs release"):
        flash(packages("hf-nan", nan=True), sshd.host, root=str(root), health_check=True, **sshd.kwargs())
    assert current_release(root) == old
    Bundle.open(root / "current" / "bundle", verify=True)


def test_unreachable_host_and_unknown_host_key(sshd, packages, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    t0 = time.monotonic()
    kw = sshd.kwargs()
    kw["port"] = closed_port
    with pytest.raises(DeployError, match="cannot reach .* over ssh: .*Connection refused") as e:
        flash(packages("un-pkg"), sshd.host, root=str(tmp_path / "b"), **kw)
    assert "sshd runs" in str(e.value) and time.monotonic() - t0 < 30
    other = tmp_path / "known_hosts"
    other.write_text(f"[127.0.0.1]:{sshd.port} ssh-ed25519 "
                     "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    kw = sshd.kwargs()
    kw["ssh_options"] = [o if not o.startswith("UserKnownHostsFile=") else f"UserKnownHostsFile={other}"
                         for o in kw["ssh_options"]]
    with pytest.raises(DeployError, match="Host key verification failed") as e:
        flash(packages("un-pkg"), sshd.host, root=str(tmp_path / "b"), **kw)
    assert "known_hosts" in str(e.value)
    assert not (tmp_path / "b").exists()


def test_board_without_edge_sdk_is_told_what_to_install(sshd, packages, tmp_path):
    kw = sshd.kwargs(remote_edge_sdk=str(tmp_path / "no" / "edge-sdk"))
    with pytest.raises(DeployError, match="edge-sdk is not installed on") as e:
        flash(packages("ne-pkg"), sshd.host, root=str(tmp_path / "b"), **kw)
    assert "pip install 'edge-sdk[onnxruntime]'" in str(e.value)  # the bundle is ONNX
    # A command that is there but is not edge-sdk (or a broken install of it).
    with pytest.raises(DeployError, match="`/bin/false --version` does not work on"):
        flash(packages("ne-pkg"), sshd.host, root=str(tmp_path / "b"), **sshd.kwargs(remote_edge_sdk="/bin/false"))


def test_full_board_disk_is_refused_before_upload(sshd, packages, small_fs):
    root = small_fs / "board"
    with pytest.raises(DeployError, match=r"not enough disk space on .*: the upload and the release need"):
        flash(packages("fd-big", payload=1_500_000), sshd.host, root=str(root), **sshd.kwargs())
    assert _staged(root) == []


def test_service_unit_is_written_from_the_template(sshd, packages, tmp_path):
    root = tmp_path / "board app"  # a space: quoting on the remote shell and in the unit
    units = tmp_path / "units"
    s = flash(packages("svc-pkg"), sshd.host, root=str(root), service=True, unit_dir=str(units),
              service_start=False, app="/usr/bin/python3 '/opt/my app/serve.py' --bundle {bundle} --rate 50%",
              memory_max="2G", **sshd.kwargs())
    unit = units / "edge-sdk-svc-pkg.service"
    assert s["service"]["path"] == str(unit) and not s["service"]["started"]
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read(unit)
    assert cp["Service"]["ExecStart"] == (f'/usr/bin/python3 "/opt/my app/serve.py" --bundle '
                                          f'"{root}/current/bundle" --rate 50%%')
    assert cp["Service"]["WorkingDirectory"] == str(root)
    assert cp["Service"]["MemoryMax"] == "2G" and cp["Service"]["Type"] == "exec"
    assert cp["Install"]["WantedBy"] in ("multi-user.target", "default.target")
    assert not list(units.glob(".*.tmp"))  # written under a temporary name, then renamed


def test_a_corrupt_partial_upload_is_detected_and_sent_again(sshd, packages, tmp_path):
    from edge_sdk.guard.fsutil import sha256_file

    root = tmp_path / "board"
    pkg = packages("corrupt-part")
    size = pkg.stat().st_size
    staging = root / "staging"
    staging.mkdir(parents=True)
    # A "partial upload" whose bytes are not a prefix of the package (a disk error, another file).
    (staging / f"{sha256_file(pkg)[:32]}.tar.part").write_bytes(os.urandom(50_000))
    s = flash(pkg, sshd.host, root=str(root), transfer="ssh", **sshd.kwargs())
    # The appended copy fails the board-side sha256, is deleted, and the package is sent whole again.
    assert s["resumed_from"] == 50_000 and s["bytes_sent"] == (size - 50_000) + size
    assert current_release(root) == s["release"]
    assert _staged(root) == []
