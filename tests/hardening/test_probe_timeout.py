"""Hardening round two, class 7: `plan`'s memory probe runs the model, so a graph that never
terminates must not hang it. The probe runs in a supervised child with a timeout; a hang becomes
one SupervisedProcessError (exit 6) and no process of the probe is left running.

The hostile model is a real ONNX graph that ONNX Runtime runs forever: a Loop with no trip count
whose condition stays true, with the tiny denoiser's input and output names, sealed into a bundle
as an attacker holding the whole bundle would."""

from __future__ import annotations

import shutil
import time
import uuid

import psutil
import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.errors import SupervisedProcessError, UsageError
from edge_sdk.memory_estimate import PROBE_TIMEOUT_ENV, probe

TIMEOUT = 4.0  # seconds; the child's start (Python + onnxruntime import) takes ~1-2 s of it here
TAG = "EDGE_SDK_TEST_PROBE_TAG"


def never_ending_denoiser():
    import onnx
    from onnx import TensorProto
    from onnx import helper as h

    body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"]), h.make_node("Identity", ["x_in"], ["x_out"])], "forever",
        [h.make_tensor_value_info("i", TensorProto.INT64, []), h.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         h.make_tensor_value_info("x_in", TensorProto.FLOAT, None)],
        [h.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         h.make_tensor_value_info("x_out", TensorProto.FLOAT, None)])
    graph = h.make_graph(
        [h.make_node("Constant", [], ["go"], value=h.make_tensor("go", TensorProto.BOOL, [], [True])),
         h.make_node("Loop", ["", "go", "sample"], ["noise_pred"], body=body)],
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
