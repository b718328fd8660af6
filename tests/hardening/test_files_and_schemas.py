"""Hardening round two, classes 5 and 6: files that are not regular files, strict JSON/TOML, and
board profiles with values of the wrong type or range (issue 14).

Every hostile input is built here, then checked through the real CLI in a subprocess (exit code,
message fragment, no traceback, finishes within the timeout: a FIFO must not hang) and through the
API in-process (exact class and fragment).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_sdk import manifest
from edge_sdk.bundle import Bundle
from edge_sdk.errors import ManifestError, PlanError, UsageError
from edge_sdk.guard.safeio import load_json, loads_json, loads_toml, read_regular
from edge_sdk.planning import board

REPO = Path(__file__).resolve().parents[2]
PROFILE = (REPO / "boards" / "intel-core-ultra-npu.toml").read_text()
TIMEOUT = 60  # s; a FIFO that hangs the reader would hit this and fail the case


def _no_crash(proc) -> None:
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert proc.returncode > 0, (proc.returncode, proc.stdout, proc.stderr)


# -- class 5: what sits at the path of a file edge-sdk reads ------------------------------------------
def _make_special(kind: str, path: Path, outside: Path) -> None:
    if kind == "dir":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink-out":
        outside.write_text("{}")
        path.symlink_to(outside)
    elif kind == "dangling-symlink":
        path.symlink_to(outside / "nowhere")
    elif kind == "device":
        path.symlink_to("/dev/zero")  # a link to a device: refused as a link before it is opened
    else:
        raise AssertionError(kind)


SPECIAL = ["dir", "fifo", "symlink-out", "dangling-symlink", "device"]


@pytest.mark.parametrize("kind", SPECIAL)
def test_manifest_not_a_regular_file(kind, tiny_bundle_copy, tmp_path, cli):
    m = tiny_bundle_copy / "manifest.json"
    m.unlink()
    _make_special(kind, m, tmp_path / "outside.json")
    proc = cli("info", str(tiny_bundle_copy), timeout=TIMEOUT)
    _no_crash(proc)
    assert proc.returncode == 3 and "manifest" in proc.stderr, proc.stderr
    with pytest.raises(ManifestError) as e:
        Bundle.open(tiny_bundle_copy)
    assert type(e.value) is ManifestError and "manifest.json" in str(e.value)


def test_device_file_read_is_capped(tmp_path):
    # /dev/zero never ends: refused as not a regular file before any byte is read.
    with pytest.raises(UsageError, match="not a regular file"):
        read_regular("/dev/zero")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2048)
    with pytest.raises(UsageError, match="over the 1024 byte limit"):
        read_regular(big, max_bytes=1024)


def test_read_into_an_engine_buffer_checks_the_size(tmp_path):
    """into=: the file lands in the caller's buffer (one copy, the engine's memory), exact size only."""
    import numpy as np

    f = tmp_path / "w.bin"
    f.write_bytes(bytes(range(200)))
    buf = np.zeros(200, np.uint8)
    assert read_regular(f, max_bytes=1024, into=buf) is buf
    assert buf.tobytes() == bytes(range(200))
    with pytest.raises(UsageError, match="is 200 bytes, expected 199"):
        read_regular(f, max_bytes=1024, into=np.zeros(199, np.uint8))


STRICT_JSON_BAD = {
    "duplicate-key": ('{"a": 1, "a": 2}', "duplicate key 'a'"),
    "nested-duplicate": ('{"x": [{"k": 1, "k": 1}]}', "duplicate key 'k'"),
    "nan": ('{"a": NaN}', "NaN is not a JSON number"),
    "infinity": ('[Infinity]', "Infinity is not a JSON number"),
    "overflow": ('{"a": 1e400}', "not finite"),
    "neg-overflow": ('{"a": -1e999}', "not finite"),
    "not-utf8": (b'{"a": "\xff"}', "not UTF-8"),
    "nesting-bomb": ("[" * 200_000 + "]" * 200_000, "not valid JSON"),
    "huge-int-digits": ('{"a": ' + "9" * 5000 + "}", "not valid JSON"),
}


@pytest.mark.parametrize("name", sorted(STRICT_JSON_BAD))
def test_strict_json(name, tmp_path):
    text, frag = STRICT_JSON_BAD[name]
    with pytest.raises(UsageError) as e:
        loads_json(text, source="x.json")
    assert frag in str(e.value)
    assert loads_json('{"a": [1.5, -2, {"b": null}]}', source="ok") == {"a": [1.5, -2, {"b": None}]}


@pytest.mark.parametrize("name", ["duplicate-key", "overflow", "nan"])
def test_manifest_strict_json(name, tiny_bundle_copy, cli):
    # The real manifest with one hostile token spliced in at the top level.
    m = tiny_bundle_copy / "manifest.json"
    text = m.read_text().rstrip()
    assert text.endswith("}")
    extra = {"duplicate-key": '"schema_version": 1', "overflow": '"x": 1e400', "nan": '"x": NaN'}[name]
    m.write_text(text[:-1] + ", " + extra + "}")
    proc = cli("info", str(tiny_bundle_copy), timeout=TIMEOUT)
    _no_crash(proc)
    assert proc.returncode == 3 and "not valid JSON" in proc.stderr
    with pytest.raises(ManifestError, match="not valid JSON"):
        manifest.load(m)


def test_schema_error_bomb_is_capped(tiny_bundle_copy):
    # 200,000 bad entries: the validator stops after MAX_SCHEMA_ERRORS instead of listing them all.
    import json
    import time

    m = tiny_bundle_copy / "manifest.json"
    data = json.loads(m.read_text())
    comp = next(iter(data["components"].values()))
    comp["artifacts"] = [{"format": 1}] * 200_000
    m.write_text(json.dumps(data))
    t = time.perf_counter()
    with pytest.raises(ManifestError) as e:
        manifest.load(m)
    assert f"at least {manifest.MAX_SCHEMA_ERRORS} schema error(s)" in str(e.value)
    assert time.perf_counter() - t < 20  # listing every error took minutes and GBs


# -- class 6: board profiles --------------------------------------------------------------------------
def _edit(old: str, new: str) -> str:
    assert old in PROFILE, old
    return PROFILE.replace(old, new, 1)


PROFILE_BAD = {
    "nan-fraction": (_edit("cap_mb = 10240", "cap_fraction = nan"), "not finite"),
    "inf-fraction": (_edit("cap_mb = 10240", "cap_fraction = inf"), "not finite"),
    "fraction-above-1": (_edit("cap_mb = 10240", "cap_fraction = 7.5"), "cap_fraction must be in (0, 1]"),
    "ram-2^63": (_edit("ram_mb = 16384", "ram_mb = 9223372036854775807"), "ram_mb must be a number of MB"),
    "cap-2^62": (_edit("cap_mb = 10240", "cap_mb = 4611686018427387904"), "cap_mb must be from 1"),
    "ram-string": (_edit("ram_mb = 16384", 'ram_mb = "16384"'), "ram_mb must be a number of MB"),
    "ram-float": (_edit("ram_mb = 16384", "ram_mb = 16384.0"), "expected int or str"),
    "cores-huge": (_edit("cores = 16", "cores = 100000000"), "(at most 4096)"),
    "cores-bool": (_edit("cores = 16", "cores = true"), "must not be a boolean"),
    "threads-huge": (_edit("default = 6", "default = 9223372036854775807"), "default: must be a positive integer"),
    "threads-negative": (_edit("default = 6", "default = -1"), "default: must be a positive integer"),
    "isa-nested": (_edit('isa = ["sse4_2", "avx2", "avx_vnni"]', 'isa = [["avx2"]]'), "isa must be a list of strings"),
    "precision-nested": (_edit('decoder = ["fp16", "fp32"]', 'decoder = [["fp16"]]'), "decoder must be a list"),
    "precision-string": (_edit('decoder = ["fp16", "fp32"]', 'decoder = "fp16"'), "decoder"),
    "max-tile-huge": (_edit("max_tile = 128", "max_tile = 4294967296"), "max_tile <= 65536"),
    "duplicate-key": (_edit("cores = 16", "cores = 16\ncores = 8"), "not valid TOML"),
    "not-utf8": (PROFILE.replace("Meteor", "Met\udcffor"), "not UTF-8"),
}


def _write_profile(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("name", sorted(PROFILE_BAD))
def test_board_profile_schema(name, tmp_path, cli):
    text, frag = PROFILE_BAD[name]
    p = tmp_path / "hostile.toml"
    _write_profile(p, text)
    proc = cli("boards", "show", str(p), timeout=TIMEOUT)
    _no_crash(proc)
    assert proc.returncode == PlanError.exit_code and frag in proc.stderr, proc.stderr
    assert str(p) in proc.stderr  # the error names the file
    with pytest.raises(PlanError) as e:
        board.load_board(p)
    assert type(e.value) is PlanError and frag in str(e.value) and str(p) in str(e.value)


@pytest.mark.parametrize("kind", SPECIAL)
def test_board_profile_not_a_regular_file(kind, tmp_path, cli):
    p = tmp_path / "hostile.toml"
    _make_special(kind, p, tmp_path / "outside.toml")
    proc = cli("boards", "show", str(p), timeout=TIMEOUT)
    _no_crash(proc)
    assert proc.returncode == PlanError.exit_code
    with pytest.raises(PlanError):
        board.load_board(p)


def test_valid_profile_still_loads(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text(PROFILE)
    prof = board.load_board(p)
    assert prof.cap_bytes == 10240 * board.MB and prof.cpu_cores == 16 and prof.threads == 6
    assert loads_toml("a = 1.5", source="x") == {"a": 1.5}
    j = tmp_path / "ok.json"
    j.write_text('{"a": 1}')
    assert load_json(j) == {"a": 1}
