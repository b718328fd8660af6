"""The shipped collection: syntax, lint, `ansible-galaxy` build and install, and the CLI's input checks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_sdk.fleet import collection_dir, collections_path, playbook
from edge_sdk.fleet.runner import ansible_env, parse_failures, parse_recap

BIN = Path(sys.executable).parent
EDGE_SDK = str(BIN / "edge-sdk")


def _tool(name: str) -> str:
    p = BIN / name
    if not p.exists():
        if not shutil.which(name):
            pytest.skip(f"{name} is not installed (pip install 'edge-sdk[fleet]')")
        return shutil.which(name)
    return str(p)


def _run(argv, tmp_path, **kw):
    env = ansible_env({"ANSIBLE_HOME": str(tmp_path / "ansible-home"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")})
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL, **kw)


@pytest.mark.parametrize("name", ["deploy", "status"])
def test_playbooks_pass_syntax_check(name, tmp_path):
    r = _run([_tool("ansible-playbook"), "--syntax-check", "-i", "localhost,", str(playbook(name))], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_collection_passes_ansible_lint(tmp_path):
    lint = BIN / "ansible-lint"
    if not lint.exists():
        pytest.skip("ansible-lint is not installed")
    # Lint a copy: ansible-lint may leave caches in the folder it lints.
    dst = tmp_path / "ansible_collections" / "edge_sdk" / "fleet"
    shutil.copytree(collection_dir(), dst)
    r = _run([str(lint), "--offline", "--nocolor"], tmp_path, cwd=dst)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "0 failure(s), 0 warning(s)" in r.stdout + r.stderr


@pytest.mark.slow
def test_collection_builds_and_installs_with_ansible_galaxy(tmp_path):
    galaxy = _tool("ansible-galaxy")
    r = _run([galaxy, "collection", "build", str(collection_dir()), "--output-path", str(tmp_path)], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    tarball = tmp_path / "edge_sdk-fleet-0.1.0.tar.gz"
    assert tarball.is_file()
    r = _run([galaxy, "collection", "install", "--force", str(tarball), "-p", str(tmp_path / "cols")], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    installed = tmp_path / "cols" / "ansible_collections" / "edge_sdk" / "fleet"
    assert json.loads((installed / "MANIFEST.json").read_text())["collection_info"]["version"] == "0.1.0"
    for rel in ("playbooks/deploy.yml", "roles/release/tasks/main.yml", "plugins/modules/edge_sdk.py"):
        assert (installed / rel).is_file(), rel
    # The installed module documents itself (its DOCUMENTATION parses).
    env_cols = {"ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "cols")}
    doc = subprocess.run([_tool("ansible-doc"), "-t", "module", "edge_sdk.fleet.edge_sdk", "--json"],
                         capture_output=True, text=True, timeout=120,
                         env={**ansible_env({"ANSIBLE_HOME": str(tmp_path / "ansible-home")}), **env_cols})
    assert doc.returncode == 0, doc.stderr
    opts = json.loads(doc.stdout)["edge_sdk.fleet.edge_sdk"]["doc"]["options"]
    assert opts["command"]["choices"] == ["doctor", "info", "install", "rollback", "releases", "run"]


def test_collections_path_holds_the_collection():
    assert (collections_path() / "ansible_collections" / "edge_sdk" / "fleet" / "galaxy.yml").is_file()


def test_parse_recap():
    out = ("PLAY RECAP ****\n"
           "pi-a                       : ok=16   changed=4    unreachable=0    failed=0    "
           "skipped=4    rescued=0    ignored=0\n"
           "pi-b                       : ok=1    changed=0    unreachable=1    failed=0    "
           "skipped=0    rescued=0    ignored=0   \n")
    rec = parse_recap(out)
    assert rec["pi-a"]["changed"] == 4 and rec["pi-a"]["ok"] == 16
    assert rec["pi-b"]["unreachable"] == 1 and set(rec) == {"pi-a", "pi-b"}


def test_parse_failures():
    out = ('fatal: [jet-a]: FAILED! => {"assertion": "edge_sdk_target.fits", "changed": false, '
           '"msg": "jet-a: too big"}\n'
           'fatal: [pi-b]: UNREACHABLE! => {"changed": false, "msg": "Failed to connect to the host via ssh", '
           '"unreachable": true}\n'
           'fatal: [pi-a -> localhost]: FAILED! => {"msg": "x"}\n')
    assert parse_failures(out) == {"jet-a": "jet-a: too big", "pi-b": "Failed to connect to the host via ssh",
                                   "pi-a": "x"}


def _inventory(tmp_path, board=True):
    hv = {"ansible_host": "127.0.0.1"}
    inv = {"all": {"hosts": {"b1": {**hv, **({"edge_sdk_board": "rpi4-4gb"} if board else {})}, "b2": hv},
                   "vars": {}}}
    if board:
        inv["all"]["hosts"]["b2"] = {**hv, "edge_sdk_board": "rpi5-8gb"}
    p = tmp_path / "inv.yml"
    p.write_text(json.dumps(inv))
    return p


@pytest.mark.parametrize("case", ["unknown-canary", "no-board", "bad-serial", "no-bundle", "odd-host"])
def test_deploy_refuses_bad_input_before_running_ansible(case, tiny_bundle, tmp_path):
    _tool("ansible-playbook")
    inv = _inventory(tmp_path, board=case != "no-board")
    if case == "odd-host":  # a host name that would be a path outside STATE_DIR/results
        inv.write_text(inv.read_text().replace('"b2"', '"..%2Fx"').replace("%2F", "/"))
    bundle = str(tmp_path / "missing.bundle") if case == "no-bundle" else str(tiny_bundle)
    extra = {"unknown-canary": ["--canary", "b9"], "bad-serial": ["--serial", "0"]}.get(case, [])
    r = subprocess.run([EDGE_SDK, "fleet", "deploy", str(inv), bundle, "--state-dir", str(tmp_path / "st"), *extra],
                       capture_output=True, text=True, timeout=120,
                       env=ansible_env({"ANSIBLE_HOME": str(tmp_path / "ansible-home")}))
    assert r.returncode == 2, r.stderr  # UsageError
    expect = {"unknown-canary": "--canary b9 is not a host", "no-board": "hosts without edge_sdk_board in",
              "bad-serial": "--serial '0'", "no-bundle": "not found (no manifest.json there)",
              "odd-host": "host names with '/' or a leading '.'"}[case]
    assert expect in r.stderr
    assert not (tmp_path / "st" / "results").exists()  # nothing ran
