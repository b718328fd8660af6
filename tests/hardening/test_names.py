"""Hardening round two, class 2: names flowing into other languages (issue 14).

Hostile names (newline + ``ExecStartPre=``, terminal escape sequences, quotes, ``%``/``$``, bidi
overrides) enter through every door: ``convert --name``, a crafted manifest, a crafted package.json,
a unit rendered for ``flash --service``. Each is refused with one error where it enters; text that is
not a name (tensor names, paths in errors) reaches the terminal escaped.
"""

from __future__ import annotations

import importlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

import edge_sdk
from edge_sdk.bundle import Bundle, BundleWriter
from edge_sdk.deploy.package import package
from edge_sdk.deploy.service import render_unit
from edge_sdk.errors import DeployError, ManifestError, UsageError
from edge_sdk.names import check_name, for_terminal, sanitize

inst = importlib.import_module("edge_sdk.deploy.install")

HOSTILE = {
    "unit-injection": "demo\nExecStartPre=/bin/sh -c 'touch /tmp/pwned'",
    "cr-injection": "demo\rExecStartPre=/bin/evil",
    "osc-title": "x\x1b]0;owned\x07",
    "csi-clear": "x\x1b[2J\x1b[H",
    "c1-csi": "x\x9b31m",
    "bidi": "gpj.\u202eexe",
    "quote": 'a"b',
    "specifier": "a%n",
    "dollar": "a$HOME",
    "space": "my model",
    "slash": "../etc",
    "dot-start": ".hidden",
    "empty": "",
    "long": "a" * 129,
    "nul": "a\x00b",
}


def _no_raw_control(text: str) -> None:
    assert "\x1b" not in text and "\x9b" not in text and "\x07" not in text and "\u202e" not in text, repr(text)


@pytest.mark.parametrize("key", sorted(HOSTILE))
def test_name_pattern(key):
    with pytest.raises(UsageError) as e:
        check_name(HOSTILE[key], what="bundle name")
    assert "is not a valid name" in str(e.value)
    _no_raw_control(str(e.value))
    assert "\n" not in e.value.message  # one line
    with pytest.raises(UsageError):
        BundleWriter("/nonexistent/x.bundle", name=HOSTILE[key])
    with pytest.raises(DeployError, match="app name"):
        render_unit(name=HOSTILE[key], root="/r", bundle="/r/b", app="/bin/true")
    s = sanitize(HOSTILE[key])
    assert check_name(s, what="x") == s  # a derived name is always made valid


def test_unit_values_besides_the_name():
    for bad in ("root\nExecStartPre=/bin/evil", "/r\x1b", '/r"', "/r\u2028x", "/r\\x"):
        with pytest.raises(DeployError):
            render_unit(name="demo", root=bad, bundle="/r/b", app="/bin/true")
    with pytest.raises(DeployError, match="user"):
        render_unit(name="demo", root="/r", bundle="/r/b", app="/bin/true", user="root\nExecStartPre=/x")
    with pytest.raises(DeployError, match="WantedBy"):
        render_unit(name="demo", root="/r", bundle="/r/b", app="/bin/true", wanted_by="x\n[Service]")
    unit = render_unit(name="demo", root="/r", bundle="/r/b", app="/bin/true")
    assert [line for line in unit.splitlines() if line.startswith("Exec")] == ["ExecStart=/bin/true"]


@pytest.mark.slow
def test_convert_name_cli_and_api(tiny_factory, tmp_path, cli):
    proc = cli("convert", tiny_factory, "-o", str(tmp_path / "o.bundle"), "--name", HOSTILE["unit-injection"])
    assert proc.returncode == UsageError.exit_code and "is not a valid name" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(UsageError, match="is not a valid name"):
        edge_sdk.convert(tiny_factory, tmp_path / "o.bundle", name=HOSTILE["osc-title"])
    assert not (tmp_path / "o.bundle").exists()


@pytest.mark.parametrize("key", ["unit-injection", "osc-title", "bidi", "space"])
def test_crafted_manifest_name(key, tiny_bundle_copy, cli):
    m = tiny_bundle_copy / "manifest.json"
    data = json.loads(m.read_text())
    data["name"] = HOSTILE[key]
    m.write_text(json.dumps(data))
    proc = cli("info", str(tiny_bundle_copy))
    assert proc.returncode == 3 and "field name" in proc.stderr, proc.stderr
    _no_raw_control(proc.stderr + proc.stdout)
    with pytest.raises(ManifestError, match="field name"):
        Bundle.open(tiny_bundle_copy)


def test_info_escapes_other_text(tiny_bundle_copy, cli):
    """Tensor names are not names in our sense (they must match the model) but are printed: escaped."""
    m = tiny_bundle_copy / "manifest.json"
    data = json.loads(m.read_text())
    comp = next(iter(data["components"].values()))
    comp["inputs"][0]["name"] = "sample\x1b]0;owned\x07\x1b[2J\u202e"
    m.write_text(json.dumps(data))
    proc = cli("info", str(tiny_bundle_copy))
    assert proc.returncode == 0, proc.stderr
    _no_raw_control(proc.stdout)
    assert "\\x1b]0;owned\\x07" in proc.stdout and "\\u202e" in proc.stdout
    # An error message carrying a hostile path is escaped too.
    proc = cli("info", str(tiny_bundle_copy.parent / "nope\x1b[2J\x1b]0;t\x07"))
    assert proc.returncode == 3
    _no_raw_control(proc.stderr)
    assert for_terminal("a\x1bb") == "a\\x1bb"


def _repack(src: Path, dst: Path, edit) -> None:
    """Rewrite a package's package.json (as an attacker with the file would), keeping the rest."""
    with tarfile.open(src, "r:*") as tin, tarfile.open(dst, "w", format=tarfile.USTAR_FORMAT) as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read() if member.isfile() else None
            if member.name == "package.json":
                doc = json.loads(data)
                edit(doc)
                data = json.dumps(doc).encode()
                member.size = len(data)
            tout.addfile(member, io.BytesIO(data) if data is not None else None)


@pytest.mark.parametrize("key", ["unit-injection", "csi-clear", "quote"])
def test_crafted_package_name(key, tiny_bundle, tmp_path, cli):
    good = Path(package(tiny_bundle, "x86-64-generic", tmp_path / "good.tar")["package"])
    bad = tmp_path / "bad.tar"
    _repack(good, bad, lambda d: d.__setitem__("name", HOSTILE[key]))
    root = tmp_path / "root"
    proc = cli("install", str(bad), "--root", str(root), "--no-runtime-check")
    assert proc.returncode == DeployError.exit_code and "package name" in proc.stderr, proc.stderr
    _no_raw_control(proc.stderr)
    with pytest.raises(DeployError, match="package name"):
        inst.read_package(bad)  # what flash reads too, before any unit is rendered
    assert not (root / "current").exists()
    shutil.rmtree(root, ignore_errors=True)
