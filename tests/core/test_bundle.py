"""The bundle format: round trip, integrity checks, atomic writes."""

from __future__ import annotations

import json
import shutil

import pytest

from edge_sdk.bundle import Bundle, BundleWriter
from edge_sdk.errors import IntegrityError, ManifestError, UnsafePathError, UsageError
from edge_sdk.guard.fsutil import sha256_file
from edge_sdk.manifest import TensorSpec


def test_round_trip_manifest_records_every_file(tiny_bundle):
    b = Bundle.open(tiny_bundle)
    assert b.name == "tiny"
    assert b.manifest["schema_version"] == 1
    art = b.artifact("denoiser", "onnx", "fp32")
    rec = b.manifest["components"]["denoiser"]["artifacts"][0]
    # Every recorded hash and size is the file's real one.
    for f in rec["files"]:
        p = tiny_bundle / f["path"]
        assert p.stat().st_size == f["size"] > 0
        assert sha256_file(p) == f["sha256"]
    assert art.path.name == "model.onnx"
    ins, outs = b.signature("denoiser")
    assert [t.name for t in ins] == ["sample", "timestep"]
    assert ins[0].shape == ("batch", 3, "height", "width")
    assert outs[0].name == "noise_pred"
    v = art.validation
    assert v["passed"] is True and v["samples"] == 3 and v["rel_l2"] < 1e-4


def test_tampered_file_is_refused_naming_it(tiny_bundle_copy):
    model = tiny_bundle_copy / "denoiser/onnx/fp32/model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"denoiser/onnx/fp32/model\.onnx fails its sha256"):
        Bundle.open(tiny_bundle_copy)


def test_truncated_and_missing_files_are_refused(tiny_bundle_copy):
    model = tiny_bundle_copy / "denoiser/onnx/fp32/model.onnx"
    size = model.stat().st_size
    with open(model, "r+b") as f:
        f.truncate(size - 1)
    with pytest.raises(IntegrityError, match=rf"is {size - 1} bytes, the manifest says {size}"):
        Bundle.open(tiny_bundle_copy)
    model.unlink()
    with pytest.raises(IntegrityError, match="is missing"):
        Bundle.open(tiny_bundle_copy)


def test_manifest_path_escaping_the_bundle_is_refused(tiny_bundle_copy):
    mpath = tiny_bundle_copy / "manifest.json"
    data = json.loads(mpath.read_text())
    art = data["components"]["denoiser"]["artifacts"][0]
    art["files"][0]["path"] = "../outside.onnx"
    art["entry"] = "../outside.onnx"
    mpath.write_text(json.dumps(data))
    with pytest.raises((ManifestError, UnsafePathError)):
        Bundle.open(tiny_bundle_copy)


def test_symlinked_file_is_refused(tiny_bundle_copy, tmp_path):
    model = tiny_bundle_copy / "denoiser/onnx/fp32/model.onnx"
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(model, outside)
    model.symlink_to(outside)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        Bundle.open(tiny_bundle_copy)


def test_unknown_schema_version_is_refused(tiny_bundle_copy):
    mpath = tiny_bundle_copy / "manifest.json"
    data = json.loads(mpath.read_text())
    data["schema_version"] = 2
    mpath.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="schema_version 2 is not supported"):
        Bundle.open(tiny_bundle_copy)


def _write_small_bundle(target, payload: bytes, *, overwrite=False, fail=False):
    with BundleWriter(target, name="small", overwrite=overwrite) as w:
        w.add_component("generator", [TensorSpec("z", "float32", ("batch", 8))],
                        [TensorSpec("image", "float32", ("batch", 3, 4, 4))])
        d = w.artifact_dir("generator", "onnx", "fp32")
        (d / "model.onnx").write_bytes(payload)
        w.add_artifact("generator", "onnx", "fp32", d / "model.onnx")
        w.model = {"kind": "gan"}
        if fail:
            raise KeyboardInterrupt  # the user pressed Ctrl-C half way
        return w.commit()


def test_interrupted_write_leaves_no_bundle_and_no_temp(tmp_path):
    target = tmp_path / "b.bundle"
    with pytest.raises(KeyboardInterrupt):
        _write_small_bundle(target, b"x" * 100, fail=True)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_atomically_and_interrupted_overwrite_keeps_old(tmp_path):
    target = tmp_path / "b.bundle"
    _write_small_bundle(target, b"old" * 10)
    with pytest.raises(UsageError, match="already exists"):
        _write_small_bundle(target, b"new" * 10)
    with pytest.raises(KeyboardInterrupt):
        _write_small_bundle(target, b"new" * 10, overwrite=True, fail=True)
    assert (target / "generator/onnx/fp32/model.onnx").read_bytes() == b"old" * 10
    Bundle.open(target)
    _write_small_bundle(target, b"new" * 10, overwrite=True)
    assert (target / "generator/onnx/fp32/model.onnx").read_bytes() == b"new" * 10
    Bundle.open(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bundle"]


def test_failed_validation_writes_nothing(tmp_path, tiny_factory):
    import edge_sdk
    from edge_sdk.errors import ValidationError

    target = tmp_path / "strict.bundle"
    # 1e-12 relative L2 is below float32's own rounding (~6e-8 per value; a real export measures
    # ~1e-7 here), so no export meets it: the convert must fail and leave nothing.
    with pytest.raises(ValidationError,
                       match=r"denoiser onnx fp32: relative L2 error .* over the fp32 tolerance 1e-12"):
        edge_sdk.convert(tiny_factory, target, tolerance=1e-12)
    assert not target.exists() and list(tmp_path.iterdir()) == []
