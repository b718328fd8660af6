"""Hardening round two, class 7: a model graph that never terminates.

`plan`'s memory probe runs the model: it runs in a supervised child with a timeout; a hang becomes
one SupervisedProcessError (exit 6) and no process of the probe is left running. `run` without
--isolate: Ctrl-C stops it (exit 130), and EDGE_SDK_CALL_TIMEOUT bounds each component call.

The hostile model is a real ONNX graph that ONNX Runtime runs forever: a Loop with no trip count
whose condition stays true, with the tiny denoiser's input and output names, sealed into a bundle
as an attacker holding the whole bundle would."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import psutil
import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.errors import SupervisedProcessError, UsageError
from edge_sdk.memory_probe import PROBE_TIMEOUT_ENV, probe

TIMEOUT = 4.0  # seconds; the child's start (Python + onnxruntime import) takes ~1-2 s of it here
TAG = "EDGE_SDK_TEST_PROBE_TAG"


def never_ending_denoiser():
    import onnx
    from onnx import TensorProto
    from onnx import helper as h

    body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"]), h.make_node("Identity", ["x_in"], ["x_out"])], "forever",
        [h.make_tensor_value_info("i", TensorProto.INT64, []),
         h.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         h.make_tensor_value_info("x_in", TensorProto.FLOAT, None)],
        [h.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         h.make_tensor_value_info("x_out", TensorProto.FLOAT, None)])
    # timestep * 0 is added at the end so every engine keeps both inputs (OpenVINO prunes unused ones).
    graph = h.make_graph(
        [h.make_node("Constant", [], ["go"], value=h.make_tensor("go", TensorProto.BOOL, [], [True])),
         h.make_node("Constant", [], ["zero"], value=h.make_tensor("zero", TensorProto.FLOAT, [], [0.0])),
         h.make_node("Loop", ["", "go", "sample"], ["looped"], body=body),
         h.make_node("ReduceSum", ["timestep"], ["t_sum"], keepdims=0),
         h.make_node("Mul", ["t_sum", "zero"], ["t_zero"]),
         h.make_node("Add", ["looped", "t_zero"], ["noise_pred"])],
        "never_ends",
        [h.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", 3, "height", "width"]),
         h.make_tensor_value_info("timestep", TensorProto.FLOAT, ["batch"])],
        [h.make_tensor_value_info("noise_pred", TensorProto.FLOAT, ["batch", 3, "height", "width"])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def hanging_bundle(tiny_bundle, tmp_path_factory, helpers):
    dst = tmp_path_factory.mktemp("hang") / "hang.bundle"
    shutil.copytree(tiny_bundle, dst)
    (dst / "denoiser/onnx/fp32/model.onnx").write_bytes(never_ending_denoiser().SerializeToString())
    helpers.reseal(dst)
    return dst


def _tagged(tag: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(TAG) == tag:
                out.append(p)
        except (psutil.Error, OSError):
            continue
    return out


def _gone(tag: str, within: float = 3.0) -> list[psutil.Process]:
    deadline = time.monotonic() + within
    while (left := _tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_probe_of_a_never_ending_graph_times_out(hanging_bundle, monkeypatch):
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG, tag)  # inherited by the probe child and the processes it forks
    b = Bundle.open(hanging_bundle)
    art = b.artifact("denoiser", "onnx", "fp32", "")
    t = time.perf_counter()
    with pytest.raises(SupervisedProcessError, match=r"memory probe of denoiser \(model.onnx\) on onnxruntime "
                                                      r"failed: .*no answer .* within 4 s") as e:
        probe(b, "denoiser", "onnxruntime", art, timeout=TIMEOUT)
    took = time.perf_counter() - t
    assert TIMEOUT <= took < TIMEOUT + 10, took  # the watchdog, not a hang, ended it
    assert PROBE_TIMEOUT_ENV in e.value.hint and "--no-measure" in e.value.hint
    assert _gone(tag) == []  # the forked per-size process died with its parent (PR_SET_PDEATHSIG)


@pytest.mark.slow
def test_plan_cli_hang_is_one_clear_error(hanging_bundle, tmp_path, cli):
    t = time.perf_counter()
    proc = cli("plan", str(hanging_bundle), "--board", "x86-64-generic",
               env={PROBE_TIMEOUT_ENV: str(TIMEOUT), "EDGE_SDK_CACHE_DIR": str(tmp_path / "cache")}, timeout=120)
    assert proc.returncode == SupervisedProcessError.exit_code, proc.stderr
    assert "memory probe of denoiser" in proc.stderr and PROBE_TIMEOUT_ENV in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert time.perf_counter() - t < 60
    # --no-measure plans from role defaults without running the model.
    ok = cli("plan", str(hanging_bundle), "--board", "x86-64-generic", "--no-measure", "--json",
             env={"EDGE_SDK_CACHE_DIR": str(tmp_path / "cache")})
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-3", "0", "ten"])
def test_probe_timeout_env_is_checked(value, hanging_bundle, monkeypatch):
    monkeypatch.setenv(PROBE_TIMEOUT_ENV, value)
    b = Bundle.open(hanging_bundle)
    with pytest.raises(UsageError, match=PROBE_TIMEOUT_ENV):
        probe(b, "denoiser", "onnxruntime", b.artifact("denoiser", "onnx", "fp32", ""))


# -- `run` without --isolate: Ctrl-C and EDGE_SDK_CALL_TIMEOUT (runtimes/watch.py) --------------
def test_in_process_call_deadline(hanging_bundle, monkeypatch):
    import threading

    import edge_sdk
    from edge_sdk.errors import InferenceError
    from edge_sdk.runtimes.watch import CALL_TIMEOUT_ENV

    monkeypatch.setenv(CALL_TIMEOUT_ENV, "1.5")
    with edge_sdk.load(hanging_bundle, runtime="onnxruntime") as gen:
        t = time.perf_counter()
        with pytest.raises(InferenceError, match=r"model.onnx: one call did not finish within 1.5 s "
                                                 r"\(EDGE_SDK_CALL_TIMEOUT\); it was cancelled"):
            gen.generate(steps=1)
        assert 1.5 <= time.perf_counter() - t < 1.5 + 5
    # ORT honoured terminate: no call thread is left computing.
    assert [t.name for t in threading.enumerate() if t.name.startswith("edge-sdk call")] == []
    monkeypatch.setenv(CALL_TIMEOUT_ENV, "nan")
    with edge_sdk.load(hanging_bundle, runtime="onnxruntime") as gen, pytest.raises(UsageError, match=CALL_TIMEOUT_ENV):
        gen.generate(steps=1)


@pytest.mark.slow
def test_cli_run_stops_on_ctrl_c_and_on_deadline(hanging_bundle, tmp_path):
    """Before runtimes/watch.py, SIGINT never reached Python while ORT ran the endless Loop: the
    process had to be killed."""
    import os
    import signal
    import subprocess
    import sys

    exe = str(Path(sys.executable).with_name("edge-sdk"))
    out = tmp_path / "o.png"
    p = subprocess.Popen([exe, "run", str(hanging_bundle), "--steps", "1", "--out", str(out)],
                         stderr=subprocess.PIPE, text=True)
    time.sleep(4)  # in the endless call by now (start-up ~1-2 s here)
    assert p.poll() is None
    p.send_signal(signal.SIGINT)
    try:
        assert p.wait(10) == 130
    finally:
        if p.poll() is None:
            p.kill()
    assert "Traceback" not in p.stderr.read() and not out.exists()
    proc = subprocess.run([exe, "run", str(hanging_bundle), "--steps", "1", "--out", str(out)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "EDGE_SDK_CALL_TIMEOUT": "1"})
    assert proc.returncode == 6 and "did not finish within 1 s" in proc.stderr and "--isolate" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
