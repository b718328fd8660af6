"""Hardening round two, class 7: a model graph that never terminates, on every engine.

`plan`'s memory probe runs the model: it runs in a supervised child with a timeout; a hang becomes
one SupervisedProcessError (exit 6) and no process of the probe is left running. `run` without
--isolate: Ctrl-C stops it (exit 130), and every component call has a deadline (--call-timeout /
call_timeout=, else EDGE_SDK_CALL_TIMEOUT, else 1800 s): past it the run ends with an
InferenceError (exit 6) and writes nothing. ONNX Runtime stops the call itself; OpenVINO (inside a
Loop) and LiteRT do not, so that call is a runaway: its session refuses further calls and the CLI
ends its process right after the error (runtimes/watch.py).

The hostile models (endless_models.py) really never end: an ONNX Loop whose condition stays true
(run by ONNX Runtime and by OpenVINO), the same graph saved as OpenVINO IR (a Loop op), and a
TFLite WHILE whose condition is 0 < 1, each with the tiny denoiser's input and output names,
sealed into one bundle as an attacker holding the whole bundle would.

Runaway calls keep a core busy until their process exits, so every case that makes one runs in
its own fresh interpreter (the API script and the CLI), never inside the test runner; those
processes run side by side, once per module (`endless_runs`)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.errors import SupervisedProcessError, UsageError
from edge_sdk.planning.memory_probe import PROBE_TIMEOUT_ENV, probe
from edge_sdk.runtimes import watch

TIMEOUT = 4.0  # seconds; the child's start (Python + onnxruntime import) takes ~1-2 s of it here
TAG = "EDGE_SDK_TEST_PROBE_TAG"
DEADLINE = 1.0  # the call deadline of the runs below
# (runtime, format): every engine, and both formats OpenVINO opens.
ENGINES = [("onnxruntime", "onnx"), ("openvino", "onnx"), ("openvino", "openvino"), ("litert", "tflite")]
STOPPABLE = {"onnxruntime"}  # engines that end the call in flight when asked


def _endless_models():
    spec = importlib.util.spec_from_file_location("hardening_endless_models", Path(__file__).with_name(
        "endless_models.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def hanging_bundle(tiny_bundle, tmp_path_factory, helpers):
    """The tiny bundle whose denoiser (ONNX) never ends (endless_models.py)."""
    return _endless_models().hanging_bundle(tiny_bundle, tmp_path_factory.mktemp("hang") / "hang.bundle",
                                            helpers.reseal, helpers.edit_manifest, every_format=False)


@pytest.fixture(scope="module")
def hanging_bundle_all(tiny_bundle, tmp_path_factory, helpers):
    """The same in ONNX, OpenVINO IR and TFLite (built for the full run only: ~1-3 s more)."""
    return _endless_models().hanging_bundle(tiny_bundle, tmp_path_factory.mktemp("hang-all") / "hang.bundle",
                                            helpers.reseal, helpers.edit_manifest)


def foreground_sigint() -> None:
    """In the child before exec: SIGINT as a terminal's foreground job has it. A suite started in
    the background by a non-interactive shell (`cmd &`) runs with SIGINT ignored, which every child
    inherits; Ctrl-C never reaches a background job, so that is not what these tests are about."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
    """ONNX Runtime here; OpenVINO IR and LiteRT in test_probe_times_out_on_every_engine."""
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
                         stderr=subprocess.PIPE, text=True, preexec_fn=foreground_sigint)
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


# -- every engine, in fresh interpreters side by side (runaway calls must not stay in the runner) --
API_SCRIPT = r"""
import json, sys, threading, time
import edge_sdk
from edge_sdk.errors import EdgeSDKError
from edge_sdk.runtimes import watch

bundle, deadline, engines = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
report = {}


def attempt(gen):
    t = time.perf_counter()
    try:
        gen.generate(steps=1)
        return {"error": None, "seconds": time.perf_counter() - t}
    except EdgeSDKError as e:
        return {"error": [type(e).__name__, e.message, e.hint or ""], "seconds": time.perf_counter() - t}


for runtime, fmt in engines:  # onnxruntime first: its check that no call thread is left comes before the runaways
    gen = edge_sdk.load(bundle, runtime=runtime, format=fmt, call_timeout=deadline)
    first = attempt(gen)
    second = attempt(gen)
    gen.close()
    report[f"{runtime}/{fmt}"] = {"first": first, "second": second, "runaway": watch.runaway_calls(),
                                  "call_threads": [t.name for t in threading.enumerate()
                                                   if t.name.startswith("edge-sdk call")]}
# No option and no variable: the default deadline applies (shortened here: 30 min is its real value).
watch.DEFAULT_CALL_TIMEOUT = deadline
with edge_sdk.load(bundle, runtime="onnxruntime") as gen:
    report["default"] = {"first": attempt(gen), "real_default": watch.call_deadline()}
print(json.dumps(report), flush=True)
"""


def _busy_worker(pid: int, cpu_s: float = 0.5, within: float = 90.0) -> bool:
    """True once a thread other than the main one of ``pid`` has used ``cpu_s`` of CPU: the endless call."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            threads = psutil.Process(pid).threads()
        except psutil.Error:
            return False
        if any(t.id != pid and t.user_time + t.system_time >= cpu_s for t in threads):
            return True
        time.sleep(0.2)
    return False


PROBED = [("openvino", "openvino", "model.xml"), ("litert", "tflite", "model.tflite")]


def _probe(bundle: Path, runtime: str, fmt: str) -> dict:
    b = Bundle.open(bundle)
    t = time.perf_counter()
    try:
        probe(b, "denoiser", runtime, b.artifact("denoiser", fmt, "fp32", ""), timeout=TIMEOUT)
        return {"error": None, "seconds": time.perf_counter() - t}
    except Exception as e:  # noqa: BLE001 - the test checks the exact class
        return {"error": e, "seconds": time.perf_counter() - t}


def _openvino_cancel(folder: Path) -> dict:
    """A long straight-line IR on OpenVINO with a 0.3 s call deadline: cancel() must end it."""
    import numpy as np

    from edge_sdk.errors import InferenceError
    from edge_sdk.runtimes.openvino import OpenVinoRuntime

    xml = folder / "long.xml"
    _endless_models().long_straight_ir(xml)
    rt = OpenVinoRuntime(xml, threads=1, options={"cache_dir": False})
    rt.call_timeout = 0.3
    feeds = {"x": np.ones((256, 1024), np.float32)}
    t = time.perf_counter()
    try:
        rt.run(feeds)
        got = {"error": None}
    except InferenceError as e:
        got = {"error": e.message}
    got["seconds"] = time.perf_counter() - t
    rt.call_timeout = 600
    t = time.perf_counter()
    got["full"] = rt.run(feeds)["y"].shape, time.perf_counter() - t  # the same session runs a whole call again
    got["runaway"] = watch.runaway_calls()
    return got


@pytest.fixture(scope="module")
def endless_runs(hanging_bundle_all, tmp_path_factory):
    """Start every slow case at once and collect what each did: the API script over all engines, the
    CLI stopped by --call-timeout on OpenVINO and LiteRT, the CLI on LiteRT stopped by Ctrl-C, and
    `plan`'s probe on OpenVINO IR and LiteRT (children of this process, in two threads)."""
    from concurrent.futures import ThreadPoolExecutor

    out = tmp_path_factory.mktemp("endless-out")
    tag = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != watch.CALL_TIMEOUT_ENV}
    exe = str(Path(sys.executable).with_name("edge-sdk"))
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}
    started = time.perf_counter()
    procs = {"api": subprocess.Popen([sys.executable, "-c", API_SCRIPT, str(hanging_bundle_all), str(DEADLINE),
                                      json.dumps(ENGINES)], **pipes)}
    for runtime in ("openvino", "litert"):
        procs[f"cli/{runtime}"] = subprocess.Popen(
            [exe, "run", str(hanging_bundle_all), "--runtime", runtime, "--steps", "1", "--call-timeout", str(DEADLINE),
             "--out", str(out / f"{runtime}.png")], **pipes)
    sigint = procs["cli/litert/sigint"] = subprocess.Popen(
        [exe, "run", str(hanging_bundle_all), "--runtime", "litert", "--steps", "1", "--out", str(out / "sigint.png")],
        preexec_fn=foreground_sigint, **pipes)
    os.environ[TAG] = tag  # inherited by the probe children and the processes they fork
    try:
        with ThreadPoolExecutor(len(PROBED) + 1) as pool:
            probes = {rt: pool.submit(_probe, hanging_bundle_all, rt, fmt) for rt, fmt, _ in PROBED}
            ov_cancel = pool.submit(_openvino_cancel, tmp_path_factory.mktemp("long"))
            in_call = _busy_worker(sigint.pid)
            sigint.send_signal(signal.SIGINT)
            sent = time.perf_counter()
            ended = {}
            while len(ended) < len(procs) and time.perf_counter() - started < 180:
                for name, p in procs.items():
                    if name not in ended and p.poll() is not None:
                        ended[name] = time.perf_counter()
                time.sleep(0.05)
            runs = {"probe": {rt: f.result() for rt, f in probes.items()}, "openvino_cancel": ov_cancel.result()}
    finally:
        del os.environ[TAG]
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    for name, p in procs.items():
        stdout, stderr = p.communicate()
        runs[name] = {"code": p.returncode, "stdout": stdout, "stderr": stderr,
                      "wall": ended.get(name, float("inf")) - (sent if p is sigint else started)}
    runs["cli/litert/sigint"]["in_call"] = in_call
    runs["outputs"] = sorted(f.name for f in out.iterdir())
    runs["probe_left"] = _gone(tag)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize(("runtime", "fmt", "entry"), PROBED, ids=[r for r, _, _ in PROBED])
def test_probe_times_out_on_every_engine(runtime, fmt, entry, endless_runs):
    got = endless_runs["probe"][runtime]
    e = got["error"]
    assert type(e) is SupervisedProcessError, repr(e)
    assert f"memory probe of denoiser ({entry}) on {runtime} failed" in e.message, e.message
    assert f"no answer from the child process within {TIMEOUT:g} s" in e.message, e.message
    assert TIMEOUT <= got["seconds"] < TIMEOUT + 10, got  # the watchdog, not a hang, ended it
    assert endless_runs["probe_left"] == []  # no probe process (or its forks) left running


@pytest.mark.slow
@pytest.mark.parametrize(("runtime", "fmt"), ENGINES, ids=[f"{r}-{f}" for r, f in ENGINES])
def test_api_call_deadline_on_every_engine(runtime, fmt, endless_runs):
    api = endless_runs["api"]
    assert api["code"] == 0, api["stderr"][-2000:]
    got = json.loads(api["stdout"].strip().splitlines()[-1])[f"{runtime}/{fmt}"]
    first, second = got["first"], got["second"]
    cls, message, hint = first["error"]
    assert cls == "InferenceError", first
    assert f"one call did not finish within {DEADLINE:g} s ({watch.CALL_TIMEOUT_OPTION})" in message, message
    assert "--isolate" in hint and watch.CALL_TIMEOUT_ENV in hint, hint
    # Stopped by the deadline, plus at most the cancel grace and 3 s of slack for the shared machine.
    assert DEADLINE <= first["seconds"] < DEADLINE + watch.CANCEL_GRACE_S + 3, first
    if runtime in STOPPABLE:
        assert message.endswith("it was cancelled") and got["runaway"] == [] and got["call_threads"] == []
        assert second["error"][0] == "InferenceError" and "it was cancelled" in second["error"][1]  # usable again
    else:
        assert "did not stop it when asked" in message and "refuses further calls" in message, message
        assert got["runaway"][-1].endswith(Path(message.split(":")[0]).name), got  # recorded as a runaway
        # The engine is still busy with the first call: the session refuses at once instead of racing it.
        assert second["error"][0] == "InferenceError" and "still running" in second["error"][1], second
        assert second["seconds"] < 0.5, second


@pytest.mark.slow
def test_openvino_cancel_ends_a_long_call(endless_runs):
    """What the async API buys: outside a Loop, OpenVINO's cancel() ends a call at the deadline,
    and the session stays usable (200 large matmuls: seconds of work on one thread)."""
    got = endless_runs["openvino_cancel"]
    assert got["error"] is not None and got["error"].endswith("it was cancelled"), got
    assert 0.3 <= got["seconds"] < 0.3 + watch.CANCEL_GRACE_S, got
    shape, full_seconds = got["full"]
    assert tuple(shape) == (256, 1024) and full_seconds > got["seconds"], got  # the call really was longer
    assert got["runaway"] == []


@pytest.mark.slow
def test_default_call_deadline_applies(endless_runs):
    got = json.loads(endless_runs["api"]["stdout"].strip().splitlines()[-1])["default"]
    cls, message, _hint = got["first"]["error"]
    assert cls == "InferenceError" and "(the default call deadline); it was cancelled" in message, message
    assert DEADLINE <= got["first"]["seconds"] < DEADLINE + watch.CANCEL_GRACE_S + 3


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["openvino", "litert"])
def test_cli_call_deadline_ends_the_process(runtime, endless_runs):
    run = endless_runs[f"cli/{runtime}"]
    assert run["code"] == 6, run["stderr"]
    assert f"one call did not finish within {DEADLINE:g} s (--call-timeout" in run["stderr"], run["stderr"]
    assert "did not stop it when asked" in run["stderr"] and "--isolate" in run["stderr"]
    assert "Traceback" not in run["stderr"] and "internal error" not in run["stderr"]
    assert f"{runtime}.png" not in endless_runs["outputs"]  # nothing written
    # The process ended although its runaway thread never will; start-up on the shared machine is most of this.
    assert run["wall"] < 60, run["wall"]


@pytest.mark.slow
def test_cli_ctrl_c_on_an_engine_that_cannot_stop(endless_runs):
    run = endless_runs["cli/litert/sigint"]
    assert run["in_call"], "the run never reached the endless call"
    assert run["code"] == 130, run["stderr"]
    assert "aborted" in run["stderr"] and "Traceback" not in run["stderr"] and "internal error" not in run["stderr"]
    assert "sigint.png" not in endless_runs["outputs"]
    assert run["wall"] < 10, run["wall"]  # from the signal to the exit


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 0.0, 0.05, 1e9, True, "10"])
def test_bad_call_timeout_is_refused(value, tmp_path):
    import edge_sdk

    # Refused before anything is opened: the bundle does not even exist.
    for isolate in (False, True):
        with pytest.raises(UsageError, match=r"--call-timeout \(call_timeout=\): must be a finite number of "
                                             r"seconds from 0.1 to 604800"):
            edge_sdk.load(tmp_path / "absent.bundle", call_timeout=value, isolate=isolate)


def test_call_deadline_precedence(monkeypatch):
    monkeypatch.delenv(watch.CALL_TIMEOUT_ENV, raising=False)
    assert watch.call_deadline() == (watch.DEFAULT_CALL_TIMEOUT, "the default call deadline")
    assert watch.DEFAULT_CALL_TIMEOUT == 1800.0
    monkeypatch.setenv(watch.CALL_TIMEOUT_ENV, "12.5")
    assert watch.call_deadline() == (12.5, watch.CALL_TIMEOUT_ENV)
    assert watch.call_deadline(3) == (3.0, watch.CALL_TIMEOUT_OPTION)  # the option beats the variable
    monkeypatch.setenv(watch.CALL_TIMEOUT_ENV, "1e999")
    with pytest.raises(UsageError, match=watch.CALL_TIMEOUT_ENV):
        watch.call_deadline()
