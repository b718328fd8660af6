"""The deploy commands as a user runs them: one-line errors, exit codes, JSON output, the unit template."""

from __future__ import annotations

import configparser
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest

from edge_sdk.deploy.service import exec_start, render_unit, unit_name
from edge_sdk.errors import DeployError

EDGE_SDK = str(Path(sys.executable).with_name("edge-sdk"))


def test_package_install_rollback_round_trip(cli, variants, tmp_path):
    out = tmp_path / "m.tar.gz"
    p = cli("package", str(variants("cli-a")), "--board", "no-such-board", "-o", str(out), "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["compressed"] and s["files"] == 2 and len(s["sha256"]) == 64
    assert "warning: no board profile named 'no-such-board'" in p.stderr
    root = tmp_path / "root"
    p = cli("install", str(out), "--root", str(root), "--json")
    assert p.returncode == 0, p.stderr
    first = json.loads(p.stdout)
    assert first["status"] == "installed" and (root / "current" / "bundle" / "manifest.json").is_file()
    cli("package", str(variants("cli-b")), "--board", "x", "-o", str(tmp_path / "b.tar"), "-q")
    p = cli("install", str(tmp_path / "b.tar"), "--root", str(root))
    assert p.returncode == 0 and "installed cli-b as release" in p.stdout
    p = cli("rollback", "--root", str(root), "--list", "--json")
    rows = json.loads(p.stdout)
    assert [r["name"] for r in rows if r["current"]] == ["cli-b"] and len(rows) == 2
    p = cli("rollback", "--root", str(root))
    assert p.returncode == 0 and f"current -> releases/{first['release']}" in p.stdout
    # The app-facing path works straight away: run the rolled-back bundle through `current`.
    p = cli("run", str(root / "current" / "bundle"), "--steps", "1", "--out", str(tmp_path / "o.png"), "-q")
    assert p.returncode == 0, p.stderr and (tmp_path / "o.png").stat().st_size > 0


def test_errors_are_one_line_with_exit_codes(cli, packages, tmp_path):
    root = tmp_path / "root"
    assert cli("install", str(packages("err-ok")), "--root", str(root), "-q").returncode == 0
    with tarfile.open(packages("err-new")) as tf:
        evil = [(m, tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()]
    link = tarfile.TarInfo("bundle/escape")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    bad = tmp_path / "evil.tar"
    import io

    with tarfile.open(bad, "w", format=tarfile.USTAR_FORMAT) as tf:
        for m, data in evil[:2] + [(link, None)] + evil[2:]:
            tf.addfile(m, io.BytesIO(data) if data is not None else None)
    p = cli("install", str(bad), "--root", str(root))
    assert p.returncode == 3  # UnsafePathError is a BundleError
    assert p.stderr.startswith("error: package ") and "'bundle/escape' is a symbolic link -> '/etc/passwd'" in p.stderr
    assert "Traceback" not in p.stderr
    p = cli("rollback", "--root", str(tmp_path / "nothing"))
    assert p.returncode == 8 and "nothing is installed under" in p.stderr
    p = cli("package", str(tmp_path / "no.bundle"), "--board", "x", "-o", str(tmp_path / "x.tar"))
    assert p.returncode == 3 and "bundle not found" in p.stderr
    p = cli("flash", str(packages("err-ok")), "--host", "nobody@127.0.0.1", "--port", "1", "--connect-timeout", "3",
            "-F", os.devnull, "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={os.devnull}")
    assert p.returncode == 8 and "error: cannot reach nobody@127.0.0.1 over ssh" in p.stderr, p.stderr


def test_unit_template_renders_a_valid_unit():
    text = render_unit(name="demo", root="/var/lib/edge-sdk", bundle="/var/lib/edge-sdk/current/bundle",
                       app="/usr/bin/python3 /opt/app/serve.py {bundle} --port 8080 --price $5", user="edge",
                       memory_max="6G")
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string(text)
    svc = cp["Service"]
    assert svc["ExecStart"] == ("/usr/bin/python3 /opt/app/serve.py /var/lib/edge-sdk/current/bundle "
                                "--port 8080 --price $$5")
    assert svc["User"] == "edge" and svc["MemoryMax"] == "6G" and svc["Restart"] == "on-failure"
    assert svc["Environment"] == "PYTHONUNBUFFERED=1"  # the last of several Environment= lines
    assert '"EDGE_SDK_BUNDLE=/var/lib/edge-sdk/current/bundle"' in text
    assert cp["Install"]["WantedBy"] == "multi-user.target"
    assert unit_name("my model/v2") == "edge-sdk-my-model-v2.service"


def test_unit_refuses_what_systemd_would_misread():
    with pytest.raises(DeployError, match="absolute path"):
        exec_start("python3 serve.py", "/b")
    with pytest.raises(DeployError, match="cannot parse"):
        exec_start("/usr/bin/python3 'unterminated", "/b")
    with pytest.raises(DeployError, match="not a systemd size"):
        render_unit(name="d", root="/r", bundle="/r/b", app="/bin/true", memory_max="lots")
    with pytest.raises(DeployError, match="newline"):
        render_unit(name="d", root="/r\nExecStartPre=/bin/evil", bundle="/r/b", app="/bin/true")


def test_systemd_analyze_accepts_the_unit(tmp_path):
    import shutil
    import subprocess

    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed here")
    unit = tmp_path / "edge-sdk-demo.service"
    unit.write_text(render_unit(name="demo", root=str(tmp_path), bundle=f"{tmp_path}/current/bundle",
                                app="/bin/sleep '1' {bundle}", memory_max="1G"))
    p = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True, text=True)
    # systemd reports every unknown key or bad value as a line naming the file; there must be none.
    assert p.returncode == 0 and [ln for ln in p.stderr.splitlines() if unit.name in ln] == [], p.stderr
