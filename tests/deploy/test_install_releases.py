"""`install` / `rollback`: releases, the atomic `current` switch, pruning, health checks, kills, full disks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.deploy import current_release, install, list_releases, read_package, rollback
from edge_sdk.deploy.install import STAGES
from edge_sdk.errors import DeployError

EDGE_SDK = os.path.join(os.path.dirname(sys.executable), "edge-sdk")


def _cli(*args, env=None):
    return subprocess.run([EDGE_SDK, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def _check_current(root, want_id):
    assert current_release(root) == want_id
    assert os.readlink(root / "current") == f"releases/{want_id}"  # relative: the root can move
    b = Bundle.open(root / "current" / "bundle", verify=True)
    return b


def test_install_switch_reinstall_and_rollback(packages, tmp_path):
    root = tmp_path / "root"
    a = install(packages("rel-a"), root, check_runtimes=False)
    assert a["status"] == "installed" and a["previous"] is None
    assert _check_current(root, a["release"]).name == "rel-a"
    again = install(packages("rel-a"), root, check_runtimes=False)
    assert again["status"] == "already-current" and again["release"] == a["release"]
    b = install(packages("rel-b"), root, check_runtimes=False)
    assert b["previous"] == a["release"] and b["release"] != a["release"]
    assert _check_current(root, b["release"]).name == "rel-b"
    # Files of a release are read-only to the world and exactly the package's modes.
    f = next((root / "current" / "bundle").rglob("*.onnx"))
    assert oct(f.stat().st_mode & 0o777) == "0o644"
    r = rollback(root)
    assert (r["current"], r["previous"], r["status"]) == (a["release"], b["release"], "rolled-back")
    assert _check_current(root, a["release"]).name == "rel-a"
    with pytest.raises(DeployError, match="no earlier release"):
        rollback(root)  # rel-b was rolled away from: it is not a rollback target any more
    r = rollback(root, to=b["release"][:6])  # ...but can be switched to by id
    assert _check_current(root, b["release"]).name == "rel-b"
    rows = list_releases(root)
    assert {x["release"] for x in rows} == {a["release"], b["release"]}
    assert [x["name"] for x in rows if x["current"]] == ["rel-b"]


def test_keeps_the_previous_n_releases(packages, tmp_path):
    root = tmp_path / "root"
    ids = [install(packages(f"keep-{i}"), root, keep=1, check_runtimes=False)["release"] for i in range(4)]
    # keep=1: the current release and one before it; older ones are deleted.
    assert sorted(p.name for p in (root / "releases").iterdir()) == sorted(ids[-2:])
    assert rollback(root)["current"] == ids[-2]
    _check_current(root, ids[-2])


def test_rollback_refuses_a_damaged_release(packages, tmp_path):
    root = tmp_path / "root"
    a = install(packages("dmg-a"), root, check_runtimes=False)["release"]
    b = install(packages("dmg-b"), root, check_runtimes=False)["release"]
    onnx_file = next((root / "releases" / a / "bundle").rglob("*.onnx"))
    os.chmod(onnx_file, 0o644)
    with open(onnx_file, "r+b") as f:
        f.seek(50)
        f.write(b"\x00\x01\x02")
    with pytest.raises(Exception, match="fails its sha256 check"):
        rollback(root)
    _check_current(root, b)


def test_health_check_pass_and_fail(packages, tmp_path):
    root = tmp_path / "root"
    good = install(packages("hc-good"), root, health_check=True, health_steps=2)
    # The check generated one 32x32 RGB image from the new release, through a real runtime.
    assert good["health"]["shape"] == [1, 32, 32, 3]
    assert 0 <= good["health"]["mean"] <= 255
    with pytest.raises(DeployError, match="health check .* failed: .*NaN"):
        install(packages("hc-nan", nan=True), root, health_check=True)
    _check_current(root, good["release"])
    assert sorted(p.name for p in (root / "releases").iterdir()) == [good["release"]]
    # Without the check the same package installs: the check is what stopped it.
    bad = install(packages("hc-nan", nan=True), root, health_check=False)
    _check_current(root, bad["release"])


def test_health_check_deadline(packages, tmp_path):
    root = tmp_path / "root"
    old = install(packages("hc-old"), root, check_runtimes=False)["release"]
    with pytest.raises(DeployError, match="did not finish within 0.01 s"):
        install(packages("hc-slow"), root, health_check=True, health_timeout=0.01)
    _check_current(root, old)


@pytest.mark.parametrize("stage", STAGES)
def test_a_kill_at_any_stage_leaves_a_whole_current(packages, tmp_path, stage):
    root = tmp_path / "root"
    old = install(packages("kill-old"), root, check_runtimes=False)["release"]
    new_pkg = packages("kill-new")
    p = _cli("install", new_pkg, "--root", root, "--no-runtime-check", env={"EDGE_SDK_TEST_KILL_AT": stage})
    assert p.returncode == -9, p.stderr  # SIGKILL: nothing ran after the fault point
    cur = current_release(root)
    assert cur in (old, read_package(new_pkg).release_id)
    if stage == "switched":
        assert cur != old  # the switch is the last step that matters
    else:
        assert cur == old
    _check_current(root, cur)
    # Running the same install again finishes the job and cleans what the killed one left.
    p = _cli("install", new_pkg, "--root", root, "--no-runtime-check", "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    _check_current(root, res["release"])
    leftovers = [x.name for x in (root / "releases").iterdir() if x.name.startswith(".")]
    leftovers += [x.name for x in root.iterdir() if x.name.startswith(".current")]
    assert leftovers == []
    assert rollback(root)["current"] == old


def test_missing_runtime_is_named_with_what_to_install(tiny_bundle, tmp_path):
    from edge_sdk.deploy.package import board_requirements

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        req = board_requirements("no-such-board", {"tflite"})
    assert req["runtimes"] == ["litert"] and "pip install" in req["install"]["litert"]
    # A package that needs a runtime this machine does not have: built by hand from a real one.
    import io
    import tarfile

    from edge_sdk.deploy import package

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        package(tiny_bundle, "no-such-board", tmp_path / "p.tar")
    with tarfile.open(tmp_path / "p.tar") as tf:
        entries = [(m, tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()]
    m0, raw = entries[0]
    doc = json.loads(raw)
    doc["requirements"].update(runtimes=["no-such-runtime"], install={"no-such-runtime": "pip install 'edge-sdk[nsr]'"})
    raw = json.dumps(doc).encode()
    m0.size = len(raw)
    with tarfile.open(tmp_path / "q.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
        for m, data in [(m0, raw)] + entries[1:]:
            tf.addfile(m, io.BytesIO(data) if data is not None else None)
    with pytest.raises(DeployError, match=r"no-such-runtime.*is installed on this device") as e:
        install(tmp_path / "q.tar", tmp_path / "root")
    assert "pip install 'edge-sdk[nsr]'" in str(e.value)


def test_full_disk_is_refused_and_leaves_the_old_release(packages, small_fs, monkeypatch):
    import importlib

    inst = importlib.import_module("edge_sdk.deploy.install")  # the module: the package exports a function of that name

    root = small_fs / "root"
    old = install(packages("disk-old"), root, check_runtimes=False)["release"]
    # Too big for the disk: refused by the up-front check, before anything is written.
    with pytest.raises(DeployError, match=r"not enough disk space under .*: the release needs 3\.\d MB"):
        install(packages("disk-big", payload=3_000_000), root, check_runtimes=False)
    _check_current(root, old)
    # Fits at the check, then something else fills the disk while the files are written: ENOSPC.
    st = os.statvfs(small_fs)
    free = st.f_bavail * st.f_frsize
    pkg = packages("disk-mid", payload=free - 400_000)
    extract = inst._extract

    def fill_then_extract(info, dest):
        (small_fs / "filler").write_bytes(b"\0" * (free - 300_000))
        return extract(info, dest)

    monkeypatch.setattr(inst, "_extract", fill_then_extract)
    with pytest.raises(DeployError, match="disk full under .*No space left on device"):
        install(pkg, root, check_runtimes=False)
    _check_current(root, old)
    assert [p.name for p in (root / "releases").iterdir()] == [old]
