"""Hardening round two, class 1: edge-sdk deletes or replaces only what carries its own marker
(issue 14). Each case builds the user's data or a planted link, runs the real CLI in a subprocess
and the API in-process, and checks the refusal AND that the user's bytes are still there.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pytest

import edge_sdk
from edge_sdk.deploy.package import package
from edge_sdk.errors import DeployError, UsageError

inst = importlib.import_module("edge_sdk.deploy.install")  # edge_sdk.deploy.install is also a function


def _no_crash(proc, code: int) -> None:
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stderr)


# -- convert --overwrite --------------------------------------------------------------------------------
def _users_folder(p: Path) -> None:
    p.mkdir()
    (p / "thesis.tex").write_text("years of work")


def _users_file(p: Path) -> None:
    p.write_text("not a folder")


def _fake_manifest(p: Path) -> None:  # a manifest.json that is not an edge-sdk manifest
    _users_folder(p)
    (p / "manifest.json").write_text('{"name": "my web app", "version": 3}')


def _manifest_link(p: Path) -> None:  # manifest.json is a link to a real bundle's manifest
    _users_folder(p)
    (p / "manifest.json").symlink_to(p.parent / "real.bundle" / "manifest.json")


def _link_to_folder(p: Path) -> None:
    _users_folder(p.parent / "elsewhere")
    p.symlink_to(p.parent / "elsewhere")


def _link_to_bundle(p: Path) -> None:  # even a link to a real bundle: the link is not ours to replace
    p.symlink_to(p.parent / "real.bundle")


OVERWRITE = {"users-folder": _users_folder, "users-file": _users_file, "fake-manifest": _fake_manifest,
             "manifest-link": _manifest_link, "link-to-folder": _link_to_folder, "link-to-bundle": _link_to_bundle}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else b"<link/dir>")
            for p in sorted(root.rglob("*"))}


CLI_CASES = {"users-folder", "link-to-folder"}


@pytest.mark.parametrize("name", sorted(OVERWRITE))
def test_convert_overwrite_refuses_what_is_not_a_bundle(name, tiny_bundle, tiny_factory, tmp_path, cli):
    shutil.copytree(tiny_bundle, tmp_path / "real.bundle")
    target = tmp_path / "out"
    OVERWRITE[name](target)
    before = _tree(tmp_path)
    if name in CLI_CASES:  # the CLI costs a torch import (~5 s) per case: two cases through it
        proc = cli("convert", tiny_factory, "-o", str(target), "--overwrite")
        _no_crash(proc, UsageError.exit_code)
        assert "--overwrite replaces only" in proc.stderr, proc.stderr
    with pytest.raises(UsageError, match="--overwrite replaces only"):
        edge_sdk.convert(tiny_factory, target, overwrite=True)
    assert _tree(tmp_path) == before  # nothing of the user's changed, nothing left behind


@pytest.mark.slow
def test_convert_overwrite_still_replaces_a_bundle(tiny_bundle, tiny_factory, tmp_path):
    target = tmp_path / "b"
    shutil.copytree(tiny_bundle, target)
    (target / "manifest.json").write_text((target / "manifest.json").read_text().replace('"tiny"', '"old"', 1))
    edge_sdk.convert(tiny_factory, target, overwrite=True, name="new")
    assert json.loads((target / "manifest.json").read_text())["name"] == "new"


# -- install: releases/, .lock, pruning, state.json -------------------------------------------------------
@pytest.fixture(scope="module")
def packages(tiny_bundle, tmp_path_factory):
    """Three packages of the tiny bundle with different names (so three release ids)."""
    d = tmp_path_factory.mktemp("pkgs")
    out = []
    for i in range(3):
        b = d / f"b{i}"
        shutil.copytree(tiny_bundle, b)
        m = json.loads((b / "manifest.json").read_text())
        m["name"] = f"tiny{i}"
        (b / "manifest.json").write_text(json.dumps(m))
        out.append(Path(package(b, "x86-64-generic", d / f"p{i}.tar")["package"]))
    return out


def _install_cli(cli, pkg: Path, root: Path, *extra: str):
    return cli("install", str(pkg), "--root", str(root), "--no-runtime-check", *extra)


def test_install_never_prunes_what_it_did_not_record(packages, tmp_path, cli):
    root = tmp_path / "root"
    inst.install(packages[0], root, keep=0, check_runtimes=False)
    # The user's folders under releases/, one shaped exactly like a release (hex id + package.json).
    (root / "releases" / "my-notes").mkdir()
    (root / "releases" / "my-notes" / "a.txt").write_text("mine")
    fake = root / "releases" / "0123456789abcdef"
    fake.mkdir()
    (fake / "package.json").write_text("{}")
    proc = _install_cli(cli, packages[1], root, "--keep", "0")
    _no_crash(proc, 0)
    r = inst.install(packages[2], root, keep=0, check_runtimes=False)
    assert (root / "releases" / "my-notes" / "a.txt").read_text() == "mine"
    assert (fake / "package.json").exists()
    # The releases it did install and no longer keeps are gone (pruning still works).
    ids = {p.name for p in (root / "releases").iterdir()}
    assert ids == {"my-notes", "0123456789abcdef", r["release"]}


def test_install_refuses_symlinked_releases(packages, tmp_path, cli):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    # A previous install recorded release ids; the attacker swaps releases/ for a link to the victim.
    root = tmp_path / "root"
    inst.install(packages[0], root, keep=0, check_runtimes=False)
    rid = inst.current_release(root)
    (victim / rid).mkdir()
    (victim / rid / "package.json").write_text("{}")
    shutil.rmtree(root / "releases")
    (root / "releases").symlink_to(victim)
    proc = _install_cli(cli, packages[1], root, "--keep", "0")
    _no_crash(proc, DeployError.exit_code)
    assert "symbolic link" in proc.stderr
    with pytest.raises(DeployError, match="symbolic link"):
        inst.install(packages[1], root, keep=0, check_runtimes=False)
    with pytest.raises(DeployError, match="symbolic link"):
        inst.rollback(root)
    assert (victim / "keep.txt").read_text() == "precious" and (victim / rid / "package.json").exists()


@pytest.mark.parametrize("kind", ["symlink", "dir", "fifo"])
def test_install_lock_is_never_followed(kind, packages, tmp_path, cli):
    import os

    root = tmp_path / "root"
    root.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    lock = root / ".lock"
    if kind == "symlink":
        lock.symlink_to(victim)
    elif kind == "dir":
        lock.mkdir()
    else:
        os.mkfifo(lock)
    proc = _install_cli(cli, packages[0], root)
    _no_crash(proc, DeployError.exit_code)
    assert "lock file" in proc.stderr
    with pytest.raises(DeployError, match="lock file"):
        inst.install(packages[0], root, check_runtimes=False)
    assert victim.read_text() == "precious"


STATE_BAD = {
    "not-json": (b"{", "not valid JSON"),
    "duplicate-key": (b'{"history": [], "history": ["../../etc"]}', "duplicate key"),
    "traversal-id": (b'{"history": ["../../victim"]}', "history/0 is not a release id"),
    "nested": (b'{"history": [["0123456789abcdef"]]}', "history/0 is not a release id"),
    "history-object": (b'{"history": {"a": 1}}', "field history must be a list"),
    "nan": (b'{"history": [], "x": NaN}', "NaN"),
    "array": (b"[]", "must be a JSON object"),
}


@pytest.mark.parametrize("name", sorted(STATE_BAD) + ["fifo", "symlink"])
def test_install_state_is_validated(name, packages, tmp_path, cli):
    import os

    root = tmp_path / "root"
    inst.install(packages[0], root, check_runtimes=False)
    state = root / "state.json"
    state.unlink()
    if name == "fifo":
        os.mkfifo(state)
        frag = "not a regular file"
    elif name == "symlink":
        (tmp_path / "elsewhere.json").write_text('{"history": []}')
        state.symlink_to(tmp_path / "elsewhere.json")
        frag = "symbolic link"
    else:
        data, frag = STATE_BAD[name]
        state.write_bytes(data)
    proc = _install_cli(cli, packages[1], root)
    _no_crash(proc, DeployError.exit_code)
    assert frag in proc.stderr and "state.json" in proc.stderr, proc.stderr
    with pytest.raises(DeployError, match="state.json"):
        inst.install(packages[2], root, check_runtimes=False)
