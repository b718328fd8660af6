"""Hardening round two, classes 3 and 4: the bytes that run are the bytes that were verified, and
nothing is loaded because it sits nearby (issue 14).

``load()`` verifies every file; the runtime later reads each file once into memory, hashes it
against the manifest and hands the engine those bytes, or (ONNX Runtime) the descriptor it hashed
through, never the path. A file swapped between
``load()`` and the first ``generate()`` (in place, by rename, by a symlink) is an IntegrityError;
the run never uses it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import edge_sdk
from edge_sdk.bundle import Bundle
from edge_sdk.errors import BundleError, IntegrityError, UnsafePathError

MODEL = "denoiser/onnx/fp32/model.onnx"


def _flip(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


def _in_place(p: Path, tmp: Path) -> None:
    with open(p, "r+b") as f:  # same inode, same size
        data = f.read()
        f.seek(0)
        f.write(_flip(data))


def _by_rename(p: Path, tmp: Path) -> None:
    new = p.with_name(".new")
    new.write_bytes(_flip(p.read_bytes()))
    os.replace(new, p)


def _by_symlink(p: Path, tmp: Path) -> None:
    other = tmp / "other.onnx"
    other.write_bytes(_flip(p.read_bytes()))
    p.unlink()
    p.symlink_to(other)


SWAPS = {"in-place": _in_place, "rename": _by_rename, "symlink": _by_symlink}


@pytest.mark.parametrize("swap", sorted(SWAPS))
def test_swap_between_load_and_generate(swap, tiny_bundle_copy, tmp_path):
    gen = edge_sdk.load(tiny_bundle_copy)  # verifies every file
    try:
        SWAPS[swap](tiny_bundle_copy / MODEL, tmp_path)
        with pytest.raises(BundleError) as e:
            gen.generate(steps=1, seed=0)
        # a link is refused on the way (UnsafePathError); changed bytes fail the hash at session creation
        assert type(e.value) is (UnsafePathError if swap == "symlink" else IntegrityError), e.value
        assert "model.onnx" in str(e.value)
    finally:
        gen.close()


SCRIPT = """
import os, sys, edge_sdk
b, model = sys.argv[1], sys.argv[2]
gen = edge_sdk.load(b)
data = open(model, "rb").read()
i = len(data) // 2
open(model, "r+b").write(data[:i] + bytes([data[i] ^ 1]))
gen.generate(steps=1, seed=0)
"""


def test_swap_in_a_separate_process(tiny_bundle_copy):
    """The same through a fresh interpreter and edge-sdk's CLI error path: exit 3, one line, no traceback."""
    code = "from edge_sdk.cli.common import run_cli\nimport click, sys\n" \
           "@click.command()\ndef c():\n" + "\n".join("    " + line for line in SCRIPT.strip().splitlines()) + \
           "\nsys.argv=[sys.argv[0]]+sys.argv[1:3]\nsys.exit(run_cli(c, []))\n"
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_bundle_copy), str(tiny_bundle_copy / MODEL)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert "changed after the bundle was verified" in proc.stderr and "Traceback" not in proc.stderr


def test_unswapped_runs_and_matches(tiny_bundle_copy):
    import numpy as np

    with edge_sdk.load(tiny_bundle_copy) as gen:
        a = gen.generate(steps=1, seed=0)
    with edge_sdk.load(tiny_bundle_copy) as gen:
        b = gen.generate(steps=1, seed=0)
    assert np.array_equal(np.asarray(a.images), np.asarray(b.images))  # deterministic, bytes path works


def test_openvino_weights_must_be_listed(tiny_bundle_copy, cli):
    """Class 3: an IR whose .bin the manifest does not list is refused at open (nothing loaded from beside)."""
    m = tiny_bundle_copy / "manifest.json"
    data = json.loads(m.read_text())
    comp = data["components"]["denoiser"]
    art = dict(comp["artifacts"][0])
    art.update(format="openvino", entry="denoiser/openvino/fp32/model.xml")
    (tiny_bundle_copy / "denoiser/openvino/fp32").mkdir(parents=True)
    xml = tiny_bundle_copy / art["entry"]
    xml.write_text('<?xml version="1.0"?><net name="x" version="11"><layers/></net>')
    (tiny_bundle_copy / "denoiser/openvino/fp32/model.bin").write_bytes(b"\0" * 64)  # sits nearby, unlisted
    from edge_sdk.guard.fsutil import sha256_file

    art["files"] = [{"path": art["entry"], "size": xml.stat().st_size, "sha256": sha256_file(xml)}]
    comp["artifacts"].append(art)
    m.write_text(json.dumps(data))
    proc = cli("info", str(tiny_bundle_copy))
    assert proc.returncode == 3 and "does not list" in proc.stderr, proc.stderr
    with pytest.raises(IntegrityError, match="model.bin"):
        Bundle.open(tiny_bundle_copy)


@pytest.mark.parametrize("option", ["delegates", "module", "trt_cache_dir"])
def test_plan_file_beside_bundle_cannot_load_native_code(option, tiny_bundle_copy, tmp_path, cli):
    """Class 3: a tuned plan planted next to the bundle (picked up automatically by load()) that names a
    delegate library, a module or an engine cache is refused; nothing is loaded from it."""
    from edge_sdk.errors import PlanError
    from edge_sdk.measure.tune import TUNED_SCHEMA, _manifest_sha, tuned_plan_path
    from edge_sdk.planning.plan import default_plan

    b = Bundle.open(tiny_bundle_copy)
    plan = default_plan(b).to_json()
    plan["components"]["denoiser"]["options"][option] = [str(tmp_path / "libevil.so")]
    path = tuned_plan_path(b.root, "x86-64-generic")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"kind": "edge-sdk-tuned-plan", "schema": TUNED_SCHEMA,
                                "manifest_sha256": _manifest_sha(b), "plan": plan}))
    proc = cli("run", str(tiny_bundle_copy), "--steps", "1", "--out", str(tmp_path / "o.png"))
    assert proc.returncode == PlanError.exit_code and option in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "o.png").exists()
    with pytest.raises(PlanError, match=option):
        edge_sdk.load(tiny_bundle_copy)


def test_a_write_while_the_engine_loads_is_caught(tiny_bundle_copy):
    """ONNX Runtime loads a verified file through the descriptor it was hashed through; a write to
    that file while the engine reads it (simulated by an attacker in ``_open``, rewriting the same
    bytes: the file's ctime moves) is an IntegrityError, and the session is closed."""
    from edge_sdk.runtimes.onnxruntime import OnnxRuntime

    model = tiny_bundle_copy / MODEL
    art = Bundle.open(tiny_bundle_copy).artifact("denoiser", "onnx", "fp32")
    opened = []

    class Attacked(OnnxRuntime):
        def _open(self) -> None:
            assert self.verified_path(self.path).startswith("/proc/self/fd/")  # not the path
            model.write_bytes(model.read_bytes())
            super()._open()
            opened.append(self)

    with pytest.raises(IntegrityError, match="changed while it was being loaded"):
        Attacked(model, device="cpu", threads=1, verified=art.files)
    assert opened and opened[0]._session is None
    rt = OnnxRuntime(model, device="cpu", threads=1, verified=art.files)  # untouched: opens
    assert rt.inputs and not rt._pinned  # the descriptor is closed once the engine has the model


SESSION_RSS = """
import hashlib, sys
from pathlib import Path
import numpy as np, onnx
from onnx import helper, numpy_helper, TensorProto
from edge_sdk.measure.memory import peak_rss_bytes, reset_peak_rss, rss_bytes
from edge_sdk.runtimes.registry import get_runtime
p, mode, runtime = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
w = np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32)  # 64 MiB of weights
g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4096])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4096])],
                      [numpy_helper.from_array(w, "w")])
onnx.save(helper.make_model(g), p)
ver = [(p, p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())] if mode == "verified" else None
cls = get_runtime(runtime)
cls.probe()  # the engine's own set-up before the mark
before = rss_bytes()
assert reset_peak_rss()
# No compiled-model cache: OpenVINO would compile in one run and import the blob in the next.
rt = cls(p, device="cpu", threads=1, verified=ver, options={"cache_dir": False} if runtime == "openvino" else {})
size = p.stat().st_size
print((rss_bytes() - before) / size, (peak_rss_bytes() - before) / size)
"""


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_verified_model_is_held_once(tmp_path, runtime):
    """Verified loading costs no memory over loading by path, held or while opening: ONNX Runtime
    keeps a second copy of a model given as bytes (measured here on one 64 MiB MatMul weight:
    2.45x the file held from bytes, 1.45x by descriptor or by path, the 0.45 being ORT's packed
    copy of the weight); OpenVINO given bytes held the same but peaked 1.0x higher while reading
    (SD 1.5's fp32 text encoder: +1907 against +1152 MB). Both now read the descriptor the file
    was hashed through."""
    got = {}
    for mode in ("path", "verified"):
        out = subprocess.run([sys.executable, "-c", SESSION_RSS, str(tmp_path / f"{mode}.onnx"), mode, runtime],
                             capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
        assert out.returncode == 0, out.stderr[-2000:]
        got[mode] = [float(x) for x in out.stdout.strip().splitlines()[-1].split()]
    # Tolerance: 0.15x of the file (10 MB) for the allocator's rounding; the bytes path was +1.0x.
    # Held by path (measured): ORT 1.15x, OpenVINO 2.27x (its compiled copy beside the model's).
    (held_path, peak_path), (held_ver, peak_ver) = got["path"], got["verified"]
    assert 0.9 < held_path < 2.5, got
    assert held_ver < held_path + 0.15 and peak_ver < peak_path + 0.15, got
