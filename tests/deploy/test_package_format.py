"""`package`: deterministic bytes, a package.json that describes every file, ed25519 signatures."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import warnings

import pytest

from edge_sdk.deploy import package, read_package
from edge_sdk.deploy.archive import iter_members, open_stream
from edge_sdk.errors import DeployError, IntegrityError


def _pkg(bundle, out, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return package(bundle, "test-board", out, **kw)


def _keypair(tmp_path, name="key"):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    priv = tmp_path / name
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    pub = tmp_path / f"{name}.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return priv, pub


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_same_input_gives_same_bytes(tiny_bundle, tmp_path, suffix):
    a = _pkg(tiny_bundle, tmp_path / f"a{suffix}")
    b = _pkg(tiny_bundle, tmp_path / f"b{suffix}")
    assert a["sha256"] == b["sha256"]
    assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes()
    assert a["sha256"] == hashlib.sha256((tmp_path / f"a{suffix}").read_bytes()).hexdigest()
    assert a["compressed"] is (suffix == ".tar.gz")


def test_headers_are_fixed_and_sorted(tiny_bundle, tmp_path):
    _pkg(tiny_bundle, tmp_path / "p.tar.gz")
    raw = (tmp_path / "p.tar.gz").read_bytes()
    assert raw[4:8] == b"\x00\x00\x00\x00"  # gzip header mtime 0
    with tarfile.open(tmp_path / "p.tar.gz") as tf:
        members = tf.getmembers()
    assert members[0].name == "package.json"
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.isfile() or m.isdir()
        assert m.mode == (0o755 if m.isdir() else 0o644)
    files = [m.name for m in members[1:] if m.isfile()]
    assert files == sorted(files)


def test_package_json_lists_every_file_with_its_hash(tiny_bundle, tmp_path):
    _pkg(tiny_bundle, tmp_path / "p.tar")
    info = read_package(tmp_path / "p.tar")
    doc = info.doc
    assert doc["format"] == "edge-sdk-package" and doc["sdk_version"]
    assert doc["requirements"]["board"] == "test-board"
    assert "onnxruntime" in doc["requirements"]["runtimes"]  # the bundle is ONNX
    bundle_files = {p.relative_to(tiny_bundle).as_posix() for p in tiny_bundle.rglob("*") if p.is_file()}
    assert {f.removeprefix("bundle/") for f in info.files} == bundle_files
    with open_stream(tmp_path / "p.tar") as f:
        for member, stream in iter_members(f, where="t"):
            if member.name in info.files:
                data = stream.read()
                assert len(data) == info.files[member.name]["size"]
                assert hashlib.sha256(data).hexdigest() == info.files[member.name]["sha256"]


def test_unknown_board_warns_and_lists_runtimes_for_the_formats(tiny_bundle, tmp_path):
    with pytest.warns(UserWarning, match="no board profile named 'no-such-board'"):
        s = package(tiny_bundle, "no-such-board", tmp_path / "p.tar")
    assert sorted(s["requirements"]["runtimes"]) == ["onnxruntime", "openvino"]


def test_known_board_profile_gives_its_runtimes(tiny_bundle, tmp_path):
    board = pytest.importorskip("edge_sdk.planning.board")
    names = [n for n in board.board_names()
             if any(r in ("onnxruntime", "openvino") for r, _ in board.load_board(n).runtimes)]
    if not names:
        pytest.skip("no built-in board profile that runs ONNX yet")
    prof = board.load_board(names[0])
    s = package(tiny_bundle, names[0], tmp_path / "p.tar")
    want = list(dict.fromkeys(r for r, _ in prof.runtimes if r in ("onnxruntime", "openvino")))
    assert s["requirements"]["runtimes"] == want
    assert s["requirements"]["source"] == f"board profile {names[0]}"


def test_refuses_a_bundle_that_fails_its_hashes(tiny_bundle_copy, tmp_path):
    onnx_file = next(tiny_bundle_copy.rglob("*.onnx"))
    data = bytearray(onnx_file.read_bytes())
    data[100] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        _pkg(tiny_bundle_copy, tmp_path / "p.tar")
    assert not (tmp_path / "p.tar").exists()


def test_does_not_overwrite_without_asking(tiny_bundle, tmp_path):
    _pkg(tiny_bundle, tmp_path / "p.tar")
    with pytest.raises(DeployError, match="already exists"):
        _pkg(tiny_bundle, tmp_path / "p.tar")
    _pkg(tiny_bundle, tmp_path / "p.tar", overwrite=True)


def test_signed_package_verifies_with_its_key_only(tiny_bundle, tmp_path):
    priv, pub = _keypair(tmp_path)
    _, other_pub = _keypair(tmp_path, "other")
    a = _pkg(tiny_bundle, tmp_path / "s1.tar", sign_key=priv)
    b = _pkg(tiny_bundle, tmp_path / "s2.tar", sign_key=priv)
    assert a["signed"] and a["sha256"] == b["sha256"]  # ed25519 signatures are deterministic too
    info = read_package(tmp_path / "s1.tar", verify_key=pub)
    assert info.signed_by and len(info.signed_by) == 16
    with pytest.raises(IntegrityError, match="signed by key .* not by the verify key"):
        read_package(tmp_path / "s1.tar", verify_key=other_pub)
    _pkg(tiny_bundle, tmp_path / "unsigned.tar")
    with pytest.raises(IntegrityError, match="not signed"):
        read_package(tmp_path / "unsigned.tar", verify_key=pub)


def test_altered_package_json_fails_the_signature(tiny_bundle, tmp_path):
    priv, pub = _keypair(tmp_path)
    _pkg(tiny_bundle, tmp_path / "s.tar", sign_key=priv)
    # Rebuild the archive with package.json changed (one board name), signature kept as it was.
    with tarfile.open(tmp_path / "s.tar") as tf:
        entries = [(m, tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()]
    out = tmp_path / "forged.tar"
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tf:
        for m, data in entries:
            if m.name == "package.json":
                doc = json.loads(data)
                doc["requirements"]["board"] = "other-board"
                data = json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"
                m.size = len(data)
            tf.addfile(m, io.BytesIO(data) if data is not None else None)
    read_package(out)  # without a key the forged file is a well-formed package...
    with pytest.raises(IntegrityError, match="package.json was altered after signing"):
        read_package(out, verify_key=pub)  # ...and the signature catches it


def test_accepts_ssh_keygen_keys(tiny_bundle, tmp_path):
    import shutil
    import subprocess

    if not shutil.which("ssh-keygen"):
        pytest.skip("ssh-keygen not installed")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")], check=True)
    _pkg(tiny_bundle, tmp_path / "s.tar", sign_key=tmp_path / "id")
    assert read_package(tmp_path / "s.tar", verify_key=tmp_path / "id.pub").signed_by
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(tmp_path / "rsa")], check=True)
    with pytest.raises(DeployError, match="not an ed25519 key"):
        _pkg(tiny_bundle, tmp_path / "r.tar", sign_key=tmp_path / "rsa")
