"""The bad-input table (issue 10): every case gets one typed edge-sdk error, never a crash.

Each case builds its bad input from a copy of the tiny converted bundle, then checks it twice:

- through the real ``edge-sdk`` CLI in a subprocess first: its exit code, the fragment on stderr,
  no Python traceback, no "internal error", and no death by signal (a native crash is a failed
  case, never a dead pytest);
- then through the Python API in-process: the exact error class (``type(e) is X``, not a
  subclass) and a fragment of its message. Cases whose bytes reach a native parser (``native``)
  must have the CLI check, which runs the same code path, so the in-process call cannot crash.
  (``load(isolate=True)`` itself is tested in test_supervise.py.)

The table's size is asserted at the bottom (``MIN_CASES``); docs/hardening.md records the counts.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import edge_sdk
from edge_sdk.errors import (
    BundleError,
    InputError,
    IntegrityError,
    ManifestError,
    MemoryCapError,
    ModelFileError,
    ModelSourceError,
    PlanError,
    RuntimeUnavailableError,
    UnsafePathError,
    UsageError,
)

MIN_CASES = 30
MODEL = "denoiser/onnx/fp32/model.onnx"
RNG_SEED = 1234  # random-bytes cases are reproducible


@dataclass
class Case:
    id: str
    error: type[Exception]
    fragment: str
    setup: Callable[[Path, Path], Path] | None = None  # (bundle copy, tmp) -> the thing to open
    api: Callable[[Path, Path], object] | str | None = "generate"  # "generate": load + generate(steps=1)
    # "run": edge-sdk run BUNDLE; "info": edge-sdk info BUNDLE (the same Bundle.open, lighter imports)
    cli: Callable[[Path, Path], list[str]] | str | None = "run"
    exit_code: int | None = None  # default: the error class's
    native: bool = False  # the bad bytes reach a runtime's parser: run the API isolated


CASES: list[Case] = []


def case(**kw) -> None:
    CASES.append(Case(**kw))


def _run_argv(target: Path, tmp: Path) -> list[str]:
    return ["run", str(target), "--steps", "1", "--out", str(tmp / "o.png")]


def _generate(target: Path, tmp: Path, **kw) -> object:
    gen = edge_sdk.load(target)
    try:
        return gen.generate(steps=1, **kw)
    finally:
        gen.close()


# -- model files inside a re-sealed bundle: the hashes match, the bytes are bad -----------------------
def _model_bytes(data: Callable[[bytes], bytes]):
    def setup(b: Path, tmp: Path) -> Path:
        p = b / MODEL
        p.write_bytes(data(p.read_bytes()))
        _reseal(b)
        return b
    return setup


def _reseal(b: Path, add: dict[str, list[str]] | None = None) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("_hardening_conftest", Path(__file__).with_name("conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.reseal(b, add=add)


def _edit_manifest(fn: Callable[[dict], object] | None, raw: str | bytes | None = None):
    def setup(b: Path, tmp: Path) -> Path:
        path = b / "manifest.json"
        if raw is not None:
            path.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
        else:
            data = json.loads(path.read_text())
            fn(data)
            path.write_text(json.dumps(data))
        return b
    return setup


def _random(n: int) -> bytes:
    return np.random.default_rng(RNG_SEED).integers(0, 256, n, dtype=np.uint8).tobytes()


def _no_reseal_model_bytes(data: Callable[[bytes], bytes]):
    def setup(b: Path, tmp: Path) -> Path:
        p = b / MODEL
        p.write_bytes(data(p.read_bytes()))
        return b
    return setup


case(id="onnx-truncated", error=ModelFileError, fragment="truncated protobuf", native=True,
     setup=_model_bytes(lambda d: d[: len(d) // 2]))
case(id="onnx-random-bytes", error=ModelFileError, fragment="not an ONNX model", native=True,
     setup=_model_bytes(lambda d: _random(len(d))))
case(id="onnx-empty", error=ModelFileError, fragment="the file is empty", native=True,
     setup=_model_bytes(lambda d: b""))
case(id="onnx-one-byte-short", error=ModelFileError, fragment="truncated protobuf", native=True,
     setup=_model_bytes(lambda d: d[:-1]))


def _unknown_op(b: Path, tmp: Path) -> Path:
    """Well-formed protobuf, but a graph onnxruntime rejects: an operator that does not exist."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("NoSuchOp", ["sample", "timestep"], ["noise_pred"], domain="")], "bad",
        [helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", 3, "height", "width"]),
         helper.make_tensor_value_info("timestep", TensorProto.FLOAT, ["batch"])],
        [helper.make_tensor_value_info("noise_pred", TensorProto.FLOAT, ["batch", 3, "height", "width"])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), b / MODEL)
    _reseal(b)
    return b


case(id="onnx-unknown-operator", error=ModelFileError, fragment="onnxruntime cannot load", native=True,
     setup=_unknown_op)


# -- ONNX external data: locations that leave the artifact's folder -------------------------------------
def _external(location: str | None, *, symlink_to: str | None = None, truncate: bool = False, listed: bool = True):
    def setup(b: Path, tmp: Path) -> Path:
        import onnx

        p = b / MODEL
        m = onnx.load(p)
        onnx.save_model(m, p, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
                        size_threshold=0)
        weights = p.with_name("weights.bin")
        if truncate:
            weights.write_bytes(weights.read_bytes()[:100])
        if location is not None:
            m = onnx.load(p, load_external_data=False)
            for t in m.graph.initializer:
                for e in t.external_data:
                    if e.key == "location":
                        e.value = location
            onnx.save(m, p)
        if symlink_to is not None:
            secret = tmp / "outside-secret.bin"
            secret.write_bytes(weights.read_bytes())
            weights.unlink()
            os.symlink(secret if symlink_to == "outside" else symlink_to, weights)
        _reseal(b, add={"denoiser": ["denoiser/onnx/fp32/weights.bin"]} if listed else None)
        return b
    return setup


# In a bundle, Bundle.open refuses them (a location must be a listed, hashed file) ...
case(id="onnx-external-data-dotdot", error=UnsafePathError, fragment="leaves the bundle", native=True,
     setup=_external("../../../outside-secret.bin"))
case(id="onnx-external-data-absolute", error=UnsafePathError, fragment="absolute path '/etc/hostname'", native=True,
     setup=_external("/etc/hostname"))
case(id="onnx-external-data-unlisted", error=IntegrityError, fragment="which the manifest does not list",
     native=True, setup=_external(None, symlink_to="outside", listed=False))
case(id="onnx-external-data-missing", error=IntegrityError, fragment="which the manifest does not list",
     native=True, setup=_external("not-there.bin"))
case(id="onnx-external-data-truncated", error=ModelFileError, fragment="outside the", native=True,
     setup=_external(None, truncate=True))


# ... and opened directly (no bundle), the runtime adapter's pre-parse refuses them before
# onnxruntime reads a byte. Run in a supervised child: this is the path with no bundle in front.
def _open_directly(b: Path, t: Path) -> object:
    from edge_sdk.guard.supervise import run_supervised

    return run_supervised("edge_sdk.runtimes.registry:open_artifact", str(b / MODEL), "onnxruntime", timeout=120)


case(id="runtime-external-data-dotdot", error=UnsafePathError, fragment="leaves the bundle",
     setup=_external("../../../outside-secret.bin"), api=_open_directly, cli=None)
case(id="runtime-external-data-absolute", error=UnsafePathError, fragment="is absolute",
     setup=_external("/etc/hostname"), api=_open_directly, cli=None)
case(id="runtime-external-data-symlink", error=UnsafePathError, fragment="symbolic link",
     setup=_external(None, symlink_to="outside", listed=False), api=_open_directly, cli=None)
case(id="runtime-external-data-missing", error=ModelFileError, fragment="is missing",
     setup=_external("not-there.bin"), api=_open_directly, cli=None)


# -- TFLite and OpenVINO artifacts with bad bytes -------------------------------------------------------
def _foreign_artifact(fmt: str, files: dict[str, bytes], entry: str):
    def setup(b: Path, tmp: Path) -> Path:
        d = b / "denoiser" / fmt / "fp32"
        d.mkdir(parents=True)
        for name, data in files.items():
            (d / name).write_bytes(data)
        data = json.loads((b / "manifest.json").read_text())
        data["components"]["denoiser"]["artifacts"] = [{
            "format": fmt, "precision": "fp32", "entry": f"denoiser/{fmt}/fp32/{entry}",
            "files": [{"path": f"denoiser/{fmt}/fp32/{n}", "sha256": "0" * 64, "size": 0} for n in files]}]
        (b / "manifest.json").write_text(json.dumps(data))
        _reseal(b)
        return b
    return setup


case(id="tflite-random-bytes", error=ModelFileError, fragment="not a valid TFLite flatbuffer", native=True,
     setup=_foreign_artifact("tflite", {"model.tflite": _random(4096)}, "model.tflite"))
case(id="tflite-bogus-root-offset", error=ModelFileError, fragment="not a valid TFLite flatbuffer", native=True,
     setup=_foreign_artifact("tflite", {"model.tflite": b"\xff\xff\xff\x7fTFL3" + bytes(200)}, "model.tflite"))
case(id="openvino-xml-garbage", error=ModelFileError, fragment="not valid XML", native=True,
     setup=_foreign_artifact("openvino", {"model.xml": b"<net><layers" + _random(64), "model.bin": b"\0" * 16},
                             "model.xml"))
case(id="openvino-bin-missing", error=IntegrityError, fragment="which the manifest does not list", native=True,
     setup=_foreign_artifact("openvino", {"model.xml": b'<?xml version="1.0"?><net name="x"><layers/></net>'},
                             "model.xml"))

# -- manifest.json ---------------------------------------------------------------------------------------
case(cli="info", id="manifest-not-json", error=ManifestError, fragment="not valid JSON",
     setup=_edit_manifest(None, raw="{nope"))
case(cli="info", id="manifest-not-utf8", error=ManifestError, fragment="not UTF-8",
     setup=_edit_manifest(None, raw=b'{"name": "\xff\xfe"}'))
case(cli="info", id="manifest-is-array", error=ManifestError, fragment="must be a JSON object",
     setup=_edit_manifest(None, raw="[1]"))
case(cli="info", id="manifest-missing-components", error=ManifestError, fragment="'components' is a required property",
     setup=_edit_manifest(lambda d: d.pop("components")))
case(cli="info", id="manifest-missing-file-hash", error=ManifestError, fragment="'sha256' is a required property",
     setup=_edit_manifest(lambda d: d["components"]["denoiser"]["artifacts"][0]["files"][0].pop("sha256")))
case(cli="info", id="manifest-wrong-type-name", error=ManifestError, fragment="field name",
     setup=_edit_manifest(lambda d: d.update(name=5)))
case(cli="info", id="manifest-wrong-type-shape", error=ManifestError,
     fragment="field components/denoiser/inputs/0/shape",
     setup=_edit_manifest(lambda d: d["components"]["denoiser"]["inputs"][0].update(shape="1x3x32x32")))
case(cli="info", id="manifest-schema-version-2", error=ManifestError, fragment="schema_version 2 is not supported",
     setup=_edit_manifest(lambda d: d.update(schema_version=2)))
case(cli="info", id="manifest-schema-version-string", error=ManifestError, fragment="field schema_version",
     setup=_edit_manifest(lambda d: d.update(schema_version="1")))
case(cli="info", id="manifest-huge-file-size", error=ManifestError, fragment="is greater than the maximum",
     setup=_edit_manifest(lambda d: d["components"]["denoiser"]["artifacts"][0]["files"][0].update(size=2**62)))
case(cli="info", id="manifest-huge-steps", error=ManifestError, fragment="field sampler/default_steps",
     setup=_edit_manifest(lambda d: d["sampler"].update(default_steps=10**12)))
case(cli="info", id="manifest-nan", error=ManifestError, fragment="NaN is not a JSON number",
     setup=_edit_manifest(None, raw='{"schema_version": 1, "x": NaN}'))
case(cli="info", id="manifest-over-16mb", error=ManifestError, fragment="over the 16777216 byte limit",
     setup=_edit_manifest(None, raw='{"description": "' + "x" * (16 * 1024 * 1024) + '"}'))
case(cli="info", id="manifest-deeply-nested", error=ManifestError, fragment="not valid JSON",
     setup=_edit_manifest(None, raw="[" * 200_000 + "]" * 200_000))
case(cli="info", id="manifest-unknown-field", error=ManifestError, fragment="Additional properties are not allowed",
     setup=_edit_manifest(lambda d: d.update(surprise=True)))
case(cli="info", id="manifest-path-dotdot", error=ManifestError, fragment="does not match",
     setup=_edit_manifest(lambda d: d["components"]["denoiser"]["artifacts"][0]["files"][0].update(
         path="../../etc/passwd")))
case(cli="info", id="manifest-path-absolute", error=ManifestError, fragment="does not match",
     setup=_edit_manifest(lambda d: d["components"]["denoiser"]["artifacts"][0].update(entry="/etc/passwd")))
case(cli="info", id="manifest-entry-not-listed", error=ManifestError, fragment="is not among the artifact's files",
     setup=_edit_manifest(lambda d: d["components"]["denoiser"]["artifacts"][0].update(entry="denoiser/other.onnx")))
case(cli="info", id="manifest-role-mismatch", error=ManifestError, fragment="they must match",
     setup=_edit_manifest(lambda d: d["components"]["denoiser"].update(role="decoder")))
case(cli="info", id="manifest-file-listed-twice", error=ManifestError, fragment="is listed twice",
     setup=_edit_manifest(lambda d: d["components"]["denoiser"].update(
         extra_files=[d["components"]["denoiser"]["artifacts"][0]["files"][0]])))
case(cli="info", id="manifest-duplicate-artifact", error=ManifestError, fragment="duplicate artifact",
     setup=_edit_manifest(lambda d: d["components"]["denoiser"]["artifacts"].append(
         d["components"]["denoiser"]["artifacts"][0])))

# -- the bundle folder --------------------------------------------------------------------------------
case(cli="info", id="bundle-file-missing", error=IntegrityError, fragment="is missing",
     setup=lambda b, t: ((b / MODEL).unlink(), b)[1])
case(cli="info", id="bundle-file-one-byte-changed", error=IntegrityError, fragment="fails its sha256 check",
     setup=_no_reseal_model_bytes(lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:]))
case(cli="info", id="bundle-file-truncated", error=IntegrityError, fragment="bytes, the manifest says",
     setup=_no_reseal_model_bytes(lambda d: d[:-10]))


def _symlinked_model(b: Path, tmp: Path) -> Path:
    real = tmp / "real.onnx"
    shutil.move(b / MODEL, real)
    os.symlink(real, b / MODEL)
    return b


case(cli="info", id="bundle-file-is-symlink", error=UnsafePathError, fragment="goes through a symbolic link",
     setup=_symlinked_model)
case(cli="info", id="bundle-not-found", error=BundleError, fragment="bundle not found",
     setup=lambda b, t: t / "nothere.bundle")
case(cli="info", id="bundle-is-a-file", error=BundleError, fragment="is not a bundle folder",
     setup=lambda b, t: ((t / "x.bin").write_bytes(b"x"), t / "x.bin")[1])
case(cli="info", id="bundle-no-manifest", error=ManifestError, fragment="no manifest.json here",
     setup=lambda b, t: ((b / "manifest.json").unlink(), b)[1])

# -- run options ----------------------------------------------------------------------------------
case(id="unknown-sampler", error=UsageError, fragment="unknown sampler 'nope'",
     api=lambda b, t: _generate(b, t, sampler="nope"),
     cli=lambda b, t: _run_argv(b, t) + ["--sampler", "nope"])
case(id="unknown-runtime", error=UsageError, fragment="unknown runtime 'nope'",
     api=lambda b, t: edge_sdk.load(b, runtime="nope"), cli=lambda b, t: _run_argv(b, t) + ["--runtime", "nope"])
case(id="precision-not-in-bundle", error=RuntimeUnavailableError, fragment="no artifact of component denoiser",
     api=lambda b, t: edge_sdk.load(b, precision="fp16"), cli=lambda b, t: _run_argv(b, t) + ["--precision", "fp16"])
case(id="resolution-zero", error=UsageError, fragment="width 0 does not fit this model",
     api=lambda b, t: _generate(b, t, width=0, height=32), cli=lambda b, t: _run_argv(b, t) + ["--size", "0x32"])
case(id="resolution-too-big-for-memory", error=MemoryCapError, fragment="for its buffers alone",
     api=lambda b, t: _generate(b, t, width=200_000, height=200_000),
     cli=lambda b, t: _run_argv(b, t) + ["--size", "200000x200000"])
case(id="class-label-on-unconditional", error=UsageError, fragment="not class-conditional",
     api=lambda b, t: _generate(b, t, class_labels=[3]), cli=lambda b, t: _run_argv(b, t) + ["--class", "3"])
case(id="output-folder-not-writable", error=UsageError, fragment="cannot write /proc/o.png",
     api=lambda b, t: edge_sdk.load(b).generate(steps=1).save("/proc/o.png"),
     cli=lambda b, t: ["run", str(b), "--steps", "1", "--out", "/proc/o.png"])
case(id="output-folder-missing", error=UsageError, fragment="does not exist",
     api=lambda b, t: edge_sdk.load(b).generate(steps=1).save(t / "no" / "o.png"),
     cli=lambda b, t: ["run", str(b), "--steps", "1", "--out", str(t / "no" / "o.png")])
case(id="bundle-output-not-writable", error=UsageError, fragment="output folder /proc is not writable",
     api=lambda b, t: __import__("edge_sdk.bundle").bundle.BundleWriter("/proc/x.bundle", name="x"),
     cli=lambda b, t: ["convert", "examples/tiny_unet.py:factory", "-o", "/proc/x.bundle"])
case(id="convert-unknown-format", error=UsageError, fragment="unknown format 'foo'",
     api=lambda b, t: edge_sdk.convert("examples/tiny_unet.py:factory", t / "f.bundle", formats="foo"),
     cli=None)  # the CLI's convert error path is covered by bundle-output-not-writable (7 s a run)
case(id="convert-missing-source", error=ModelSourceError, fragment="does not exist",
     api=lambda b, t: edge_sdk.convert("nothere.py:factory", t / "f.bundle"), cli=None)


def _wrong_input(kind: str):
    def api(b: Path, t: Path) -> object:
        from edge_sdk.runtimes.registry import open_artifact

        rt = open_artifact(b / MODEL, "onnxruntime")
        sample = np.zeros((1, 3, 32, 32), np.float32)
        if kind == "shape":
            sample = np.zeros((1, 3, 32), np.float32)
        elif kind == "dtype":
            sample = sample.astype(np.float64)
        return rt.run({"sample": sample, "timestep": np.zeros((1,), np.float32)})
    return api


case(id="input-wrong-rank", error=InputError, fragment="(rank 4)", api=_wrong_input("shape"), cli=None)
case(id="input-wrong-dtype", error=InputError, fragment="has dtype float64", api=_wrong_input("dtype"), cli=None)
case(id="unknown-board", error=PlanError, fragment="unknown board 'no-such-board'",
     api=lambda b, t: __import__("edge_sdk.planning.board").planning.board.load_board("no-such-board"), cli=None)


def _bad_board_file(b: Path, t: Path) -> object:
    p = t / "mine.toml"
    p.write_text("name = [unclosed\n")
    return __import__("edge_sdk.planning.board").planning.board.load_board(p)


case(id="board-profile-not-toml", error=PlanError, fragment="mine.toml", api=_bad_board_file, cli=None)


def _pickle_payload(b: Path, t: Path) -> object:
    import torch

    from edge_sdk.converters.checkpoints import load_state_dict

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {t / 'pwned'}",))

    torch.save({"w": torch.zeros(2), "evil": Evil()}, t / "evil.pt")
    try:
        return load_state_dict(t / "evil.pt")
    finally:
        assert not (t / "pwned").exists(), "the pickle ran its payload"


case(id="checkpoint-pickle-payload", error=ModelSourceError, fragment="holds Python objects or code",
     api=_pickle_payload, cli=None)


# -- the test -------------------------------------------------------------------------------------------
def test_table_is_big_enough():
    assert len({c.id for c in CASES}) == len(CASES) >= MIN_CASES


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input(c: Case, tiny_bundle_copy: Path, tmp_path: Path, cli, monkeypatch):
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)  # the convert cases name examples/ relative to the repository
    target = c.setup(tiny_bundle_copy, tmp_path) if c.setup else tiny_bundle_copy

    # The CLI first, in a subprocess: a native crash there is a failed case, never a dead pytest.
    # Only when it ended in a clean error does the same input go through the API in-process (the
    # CLI runs exactly that code path, so it cannot crash here either).
    if c.cli is not None:
        argv = (_run_argv(target, tmp_path) if c.cli == "run" else ["info", str(target)] if c.cli == "info"
                else c.cli(target, tmp_path))
        r = cli(*argv, cwd=repo, timeout=240)
        assert r.returncode >= 0, f"{c.id}: the CLI died by signal {-r.returncode}: {r.stderr[-2000:]}"
        want = c.exit_code if c.exit_code is not None else c.error.exit_code
        assert r.returncode == want, f"{c.id}: exit {r.returncode}, wanted {want}: {r.stderr[-2000:]}"
        assert c.fragment in r.stderr, f"{c.id}: {r.stderr[-2000:]}"
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr[-2000:]
        assert r.stderr.strip().startswith("error:") or "\nerror:" in r.stderr, r.stderr[-2000:]
    elif c.native:
        pytest.fail("a case whose bytes reach a native parser needs its CLI check first")

    if c.api is not None:
        fn = _generate if c.api == "generate" else c.api
        with pytest.raises(Exception) as ei:
            fn(target, tmp_path)
        assert type(ei.value) is c.error, f"{c.id}: got {type(ei.value).__name__}: {ei.value}"
        assert c.fragment in str(ei.value), f"{c.id}: {ei.value}"
