"""`install` refuses hostile or damaged archives before writing anything, each with a clear message."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile

import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.deploy import current_release, install
from edge_sdk.errors import DeployError, IntegrityError, UnsafePathError


def _entries(pkg):
    with tarfile.open(pkg) as tf:
        return [(m, tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()]


def _write(out, entries, fmt=tarfile.USTAR_FORMAT):
    with tarfile.open(out, "w", format=fmt) as tf:
        for m, data in entries:
            tf.addfile(m, io.BytesIO(data) if data is not None else None)
    return out


def _info(name, kind=tarfile.REGTYPE, size=0, linkname=""):
    ti = tarfile.TarInfo(name)
    ti.type, ti.size, ti.linkname, ti.mode = kind, size, linkname, 0o644
    return ti


@pytest.fixture
def installed(packages, tmp_path):
    """An install root with release 'old' current, and a second package to tamper with."""
    root = tmp_path / "root"
    first = install(packages("old"), root, check_runtimes=False)
    return root, first["release"], packages("new")


def _assert_untouched(root, old_id, tmp_path):
    assert current_release(root) == old_id
    Bundle.open(root / "current" / "bundle", verify=True)
    assert sorted(p.name for p in (root / "releases").iterdir()) == [old_id]
    assert not (tmp_path / "evil").exists() and not (root / "evil").exists()


HOSTILE = {
    # name: (extra entry, expected error type, message pattern)
    "absolute path": (lambda tp: (_info(str(tp / "evil"), size=4), b"evil"), UnsafePathError, "absolute path"),
    "dot-dot": (lambda tp: (_info("bundle/../../evil", size=4), b"evil"),
                UnsafePathError, r"leaves the bundle \('\.\.'"),
    "symlink out": (lambda tp: (_info("bundle/link", tarfile.SYMTYPE, linkname=str(tp / "evil")), None),
                    UnsafePathError, "is a symbolic link ->"),
    "symlink relative": (lambda tp: (_info("bundle/link", tarfile.SYMTYPE, linkname="../../../evil"), None),
                         UnsafePathError, "is a symbolic link"),
    "hard link": (lambda tp: (_info("bundle/hard", tarfile.LNKTYPE, linkname="/etc/passwd"), None),
                  UnsafePathError, "is a hard link -> '/etc/passwd'"),
    "char device": (lambda tp: (_info("bundle/dev", tarfile.CHRTYPE), None), UnsafePathError, "character device"),
    "fifo": (lambda tp: (_info("bundle/fifo", tarfile.FIFOTYPE), None), UnsafePathError, "is a fifo"),
    "dot part": (lambda tp: (_info("bundle/./manifest.json", size=4), b"evil"), UnsafePathError, "has a '.' part"),
    "unlisted file": (lambda tp: (_info("bundle/extra.bin", size=4), b"evil"),
                      DeployError, "not listed in package.json"),
    "unlisted folder": (lambda tp: (_info("bundle/newdir", tarfile.DIRTYPE), None),
                        DeployError, "folder 'bundle/newdir' is not in"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_entries_are_refused_before_anything_is_written(installed, tmp_path, case):
    root, old_id, new_pkg = installed
    make, err, pattern = HOSTILE[case]
    entries = _entries(new_pkg)
    entries.insert(3, make(tmp_path))  # after package.json and the first folders
    bad = _write(tmp_path / "bad.tar", entries)
    with pytest.raises(err, match=pattern):
        install(bad, root, check_runtimes=False)
    _assert_untouched(root, old_id, tmp_path)


def test_long_names_need_pax_headers_which_are_refused(installed, tmp_path):
    root, old_id, new_pkg = installed
    entries = _entries(new_pkg) + [(_info("bundle/" + "x" * 300, size=1), b"x")]
    bad = _write(tmp_path / "bad.tar", entries, fmt=tarfile.PAX_FORMAT)
    with pytest.raises(UnsafePathError, match="pax extended header"):
        install(bad, root, check_runtimes=False)
    bad = _write(tmp_path / "bad2.tar", entries, fmt=tarfile.GNU_FORMAT)
    with pytest.raises(UnsafePathError, match="GNU long-name header"):
        install(bad, root, check_runtimes=False)
    _assert_untouched(root, old_id, tmp_path)


def test_size_differing_from_package_json_is_refused(installed, tmp_path):
    root, old_id, new_pkg = installed
    entries = []
    for m, data in _entries(new_pkg):
        if m.name.endswith("manifest.json"):
            data = data + b" "
            m.size = len(data)
        entries.append((m, data))
    with pytest.raises(IntegrityError, match=r"bundle/manifest.json is \d+ bytes, package.json says"):
        install(_write(tmp_path / "bad.tar", entries), root, check_runtimes=False)
    _assert_untouched(root, old_id, tmp_path)


def test_changed_bytes_fail_the_hash_and_leave_the_old_release(installed, tmp_path):
    root, old_id, new_pkg = installed
    raw = bytearray(new_pkg.read_bytes())
    with tarfile.open(new_pkg) as tf:
        m = next(m for m in tf.getmembers() if m.name.endswith("model.onnx"))
    raw[m.offset_data + m.size // 2] ^= 0x01  # one bit inside the model's data, headers intact
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="model.onnx fails its sha256 check"):
        install(bad, root, check_runtimes=False)
    _assert_untouched(root, old_id, tmp_path)
    assert not [p for p in (root / "releases").iterdir() if p.name.startswith(".incoming")]


def test_duplicate_and_misplaced_entries(installed, tmp_path):
    root, old_id, new_pkg = installed
    entries = _entries(new_pkg)
    dup = [e for e in entries if e[0].name.endswith("manifest.json")][0]
    with pytest.raises(DeployError, match="appears twice"):
        install(_write(tmp_path / "dup.tar", entries + [dup]), root, check_runtimes=False)
    with pytest.raises(DeployError, match="the first entry is 'bundle/?'.*not package.json"):
        install(_write(tmp_path / "order.tar", entries[1:] + entries[:1]), root, check_runtimes=False)
    missing = [e for e in entries if not e[0].name.endswith(".onnx")]
    with pytest.raises(IntegrityError, match="listed in package.json are missing, e.g. bundle/denoiser"):
        install(_write(tmp_path / "missing.tar", missing), root, check_runtimes=False)
    _assert_untouched(root, old_id, tmp_path)


def test_package_json_paths_are_checked_too(installed, tmp_path):
    root, old_id, new_pkg = installed
    entries = _entries(new_pkg)
    m, data = entries[0]
    doc = json.loads(data)
    doc["files"][0]["path"] = "bundle/../../evil"
    data = json.dumps(doc).encode()
    m.size = len(data)
    with pytest.raises(UnsafePathError, match="package.json.*leaves the bundle"):
        install(_write(tmp_path / "bad.tar", [(m, data)] + entries[1:]), root, check_runtimes=False)
    _assert_untouched(root, old_id, tmp_path)


def test_truncated_corrupt_and_foreign_files(installed, tmp_path):
    root, old_id, new_pkg = installed
    raw = new_pkg.read_bytes()
    (tmp_path / "trunc.tar").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DeployError, match="truncated"):
        install(tmp_path / "trunc.tar", root, check_runtimes=False)
    (tmp_path / "trunc.tar.gz").write_bytes(gzip.compress(raw, mtime=0)[:-2000])
    with pytest.raises(DeployError, match="truncated|corrupt"):
        install(tmp_path / "trunc.tar.gz", root, check_runtimes=False)
    gz = bytearray(gzip.compress(raw, mtime=0))
    gz[len(gz) // 2] ^= 0xFF  # a damaged deflate stream
    (tmp_path / "bad.tar.gz").write_bytes(bytes(gz))
    # Depending on where the flipped bit lands, the stream fails to inflate (corrupt / truncated /
    # bad tar header checksum), or inflates into altered file bytes that the sha256 check refuses.
    with pytest.raises((DeployError, IntegrityError), match="corrupt|checksum|truncated|sha256"):
        install(tmp_path / "bad.tar.gz", root, check_runtimes=False)
    (tmp_path / "junk.tar").write_bytes(os.urandom(4096))
    with pytest.raises(DeployError, match="checksum|not a ustar"):
        install(tmp_path / "junk.tar", root, check_runtimes=False)
    with pytest.raises(DeployError, match="not found"):
        install(tmp_path / "nope.tar", root, check_runtimes=False)
    _assert_untouched(root, old_id, tmp_path)


def test_expect_sha256_guards_the_whole_file(installed, tmp_path):
    root, old_id, new_pkg = installed
    with pytest.raises(IntegrityError, match="expected 0+; the upload|expected 0000"):
        install(new_pkg, root, expect_sha256="0" * 64, check_runtimes=False)
    _assert_untouched(root, old_id, tmp_path)
