"""Mutational fuzzing of model files through the real runtimes: every mutant is opened (and, if it
opens, run once) by its runtime in a worker subprocess; each ends as 'ok' or an edge-sdk error.

Counted separately: native crashes (the worker died by a signal; it is restarted for the rest),
hangs (no answer within the per-case deadline), and "foreign" errors (a non-edge-sdk exception,
i.e. a library traceback reaching the caller). All three must be zero. ONNX runs by default on the
tiny converted denoiser; OpenVINO IR and TFLite need a 2-minute conversion, so they are
``slow``. The mutants are opened directly (no bundle): the sha256 check would refuse them all
before a runtime sees them, which is the point of bundles but not what is tested here.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

CASE_DEADLINE_S = 60.0
WORKER = r"""
import json, sys
import numpy as np
from edge_sdk.errors import EdgeSDKError
from edge_sdk.runtimes.registry import open_artifact

runtime = sys.argv[1]
for line in sys.stdin:
    path = line.strip()
    print("@@" + json.dumps({"start": path}), flush=True)
    try:
        rt = open_artifact(path, runtime, threads=1)
        feeds = {}
        for t in rt.inputs:
            shape = [d if isinstance(d, int) and d > 0 else (1 if i == 0 else 8) for i, d in enumerate(t.shape)]
            feeds[t.name] = np.zeros(shape, dtype=t.dtype)
        rt.run(feeds)
        rt.close()
        result = "ok"
    except EdgeSDKError as e:
        result = type(e).__name__
    except BaseException as e:
        result = "foreign:" + type(e).__name__ + ": " + str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    print("@@" + json.dumps({"done": path, "result": result}), flush=True)
"""


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One of: a bit flip, a byte set to another value, a truncation, 4 random bytes spliced in."""
    kind = int(rng.integers(4))
    n = len(data)
    if kind == 0:
        i = int(rng.integers(n))
        return data[:i] + bytes([data[i] ^ (1 << int(rng.integers(8)))]) + data[i + 1:]
    if kind == 1:
        i = int(rng.integers(n))
        return data[:i] + bytes([(data[i] + int(rng.integers(1, 256))) % 256]) + data[i + 1:]
    if kind == 2:
        return data[:int(rng.integers(n))]
    i = int(rng.integers(n - 4))
    return data[:i] + rng.integers(0, 256, 4, dtype=np.uint8).tobytes() + data[i + 4:]


def run_worker(runtime: str, paths: list[Path], worker: str = WORKER) -> Counter:
    """Open every path in a worker; restart it after a crash or hang. Returns outcome counts."""
    outcomes: Counter = Counter()
    todo = list(paths)
    while todo:
        p = subprocess.Popen([sys.executable, "-c", worker, runtime], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
        p.stdin.write("".join(f"{x}\n" for x in todo))
        p.stdin.close()
        current = None
        deadline = time.monotonic() + CASE_DEADLINE_S * 3  # the first case also pays the imports
        while True:
            ready, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:  # a hang: kill it, count it, go on after the case
                p.kill()
                p.wait()
                outcomes["hang"] += 1
                todo = todo[todo.index(current) + 1:] if current in todo else todo[1:]
                break
            line = p.stdout.readline()
            if not line:  # the worker is gone
                rc = p.wait()
                if rc < 0 and current is not None:
                    outcomes[f"crash:{-rc}"] += 1
                    todo = todo[todo.index(current) + 1:]
                elif rc != 0:
                    raise AssertionError(f"worker exited with {rc}")
                else:
                    todo = []
                break
            if not line.startswith("@@"):  # a library writing to stdout (ORT/OpenVINO logs)
                continue
            msg = json.loads(line[2:])
            if "start" in msg:
                current = Path(msg["start"])
                deadline = time.monotonic() + CASE_DEADLINE_S
            else:
                outcomes[msg["result"].split(":")[0] if msg["result"].startswith("foreign") else msg["result"]] += 1
                if msg["result"].startswith("foreign"):
                    outcomes[msg["result"]] += 1  # keep the text for the failure message
                todo.remove(Path(msg["done"]))
                current = None
    return outcomes


def fuzz_format(files: dict[str, bytes], entry: str, runtime: str, work: Path, cases: int, seed: int) -> Counter:
    """``cases`` mutants of an artifact (one of its files changed each time), each in its own folder."""
    rng = np.random.default_rng(seed)
    names = sorted(files)
    paths = []
    for i in range(cases):
        d = work / f"m{i:04d}"
        d.mkdir()
        target = names[int(rng.integers(len(names)))]
        for name, data in files.items():
            (d / name).write_bytes(mutate(data, rng) if name == target else data)
        paths.append(d / entry)
    return run_worker(runtime, paths)


def _check(outcomes: Counter, cases: int) -> None:
    bad = {k: v for k, v in outcomes.items() if k.startswith(("crash", "hang", "foreign"))}
    assert bad == {}, bad
    assert sum(outcomes.values()) == cases
    # Sanity: the mutants are not all trivially refused, nor all accepted.
    assert 0 < outcomes["ok"] < cases


def test_onnx_mutants_never_crash_onnxruntime(tiny_bundle, tmp_path):
    model = (tiny_bundle / "denoiser/onnx/fp32/model.onnx").read_bytes()
    outcomes = fuzz_format({"model.onnx": model}, "model.onnx", "onnxruntime", tmp_path, cases=300, seed=11)
    _check(outcomes, 300)
    print("onnx/onnxruntime outcomes:", dict(outcomes))


@pytest.fixture(scope="module")
def tri_bundle_here(tmp_path_factory, tiny_factory) -> Path:
    import edge_sdk

    out = tmp_path_factory.mktemp("tri-fuzz") / "tri.bundle"
    edge_sdk.convert(tiny_factory, out, formats="onnx,openvino,tflite", precisions="fp32", name="tri", samples=1)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("fmt, runtime, entry", [("openvino", "openvino", "model.xml"),
                                                  ("tflite", "litert", "model.tflite"),
                                                  ("onnx", "openvino", "model.onnx")])
def test_mutants_never_crash_a_runtime(tri_bundle_here, tmp_path, fmt, runtime, entry):
    src = tri_bundle_here / "denoiser" / fmt / "fp32"
    files = {p.name: p.read_bytes() for p in src.iterdir() if p.is_file()}
    outcomes = fuzz_format(files, entry, runtime, tmp_path, cases=300, seed=12)
    _check(outcomes, 300)
    print(f"{fmt}/{runtime} outcomes:", dict(outcomes))


def test_the_harness_counts_a_native_crash(tmp_path):
    """The counter is not blind: a worker that segfaults on a case is counted and restarted."""
    crashing = WORKER.replace('    print("@@" + json.dumps({"start": path}), flush=True)\n',
                              '    print("@@" + json.dumps({"start": path}), flush=True)\n'
                              '    if "crash" in path:\n        import ctypes; ctypes.string_at(0)\n')
    assert crashing != WORKER
    paths = [tmp_path / n for n in ("a.onnx", "crash.onnx", "c.onnx")]
    for x in paths:
        x.write_bytes(b"")
    assert run_worker("onnxruntime", paths, worker=crashing) == Counter({"ModelFileError": 2, "crash:11": 1})


def _many_tensors_model(path: Path, tensors: int = 1000, floats: int = 16384) -> None:
    """A one-file ONNX model of ``tensors`` initializers of 64 KB each, summed into one output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.full(floats, i, np.float32), f"w{i}") for i in range(tensors)]
    nodes = [helper.make_node("Sum", [i.name for i in inits], ["y"])]
    graph = helper.make_graph(nodes, "many", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [floats])],
                              initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_the_model_walk_maps_no_weights(tmp_path):
    """The pre-parser reads a model's framing through a small window: none of its weights enter the
    process. Walking it by mmap had mapped the cached pages around every tensor header (64 MB of
    this 64 MB file; 313 MB of SD 1.5's int8 UNet, the peak of a Pi Zero run's bundle opening).
    Bound: 8 MB of peak RSS growth (measured: under 1 MB)."""
    from edge_sdk.guard.modelcheck import check_onnx_file
    from edge_sdk.measure.memory import peak_rss_bytes, reset_peak_rss, rss_bytes

    path = tmp_path / "many.onnx"
    _many_tensors_model(path)
    path.read_bytes()  # in the page cache, as after the bundle's hashing
    if not reset_peak_rss():
        pytest.skip("the kernel's peak-RSS mark cannot be reset here")
    before = rss_bytes()
    check_onnx_file(path)
    assert peak_rss_bytes() - before < 8 * 2**20


def test_a_huge_external_data_entry_is_refused_unread(tmp_path):
    """An external-data location is a short path: an entry of 100 KB is a damaged or hostile file,
    refused before its bytes are read (a walk that copied it could be made to read gigabytes)."""
    import onnx
    from onnx import TensorProto, helper

    from edge_sdk.errors import ModelFileError
    from edge_sdk.guard.modelcheck import check_onnx_file

    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    w.data_location = TensorProto.EXTERNAL
    entry = w.external_data.add()
    entry.key, entry.value = "location", "a" * 100_000
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "ext", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], initializer=[w])
    path = tmp_path / "ext.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path),
              save_as_external_data=False)
    with pytest.raises(ModelFileError, match="external-data entry of 100000 bytes"):
        check_onnx_file(path)
