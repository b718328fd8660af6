"""Hardening round two, class 9: SIGINT/SIGTERM during convert (issue 14).

The model's forward blocks while it is being traced by the ONNX exporter (``torch.compiler.
is_exporting()``), after writing a marker; the test then sends the signal from outside, as a user's
Ctrl-C or a service manager's stop would. The exporter must not take the interruption for an export
failure (no TorchScript fallback), nothing may be published: the old bundle stays byte for byte,
no temporary folder is left, and the exit status is 128 + the signal (130, 143).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_sdk.bundle import TMP_PREFIX, Bundle

REPO = Path(__file__).resolve().parents[2]

FACTORY = '''
import os, sys, time
import torch
sys.path.insert(0, {examples!r})
from tiny_unet import factory as _tiny

class Blocking(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
    def forward(self, sample, timestep):
        if torch.compiler.is_exporting():
            open({marker!r}, "w").close()
            t0 = time.monotonic()
            while time.monotonic() - t0 < 120:  # the test signals us within this
                time.sleep(0.05)
        return self.inner(sample, timestep)

def factory():
    model, example = _tiny()
    return Blocking(model), example
'''


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_onnx_export_keeps_old_bundle(sig, tiny_bundle, tmp_path):
    target = tmp_path / "out.bundle"
    import shutil

    shutil.copytree(tiny_bundle, target)
    before = _snapshot(target)
    marker = tmp_path / "exporting"
    src = tmp_path / "blocking_factory.py"
    src.write_text(FACTORY.format(examples=str(REPO / "examples"), marker=str(marker)))
    exe = Path(sys.executable).with_name("edge-sdk")
    proc = subprocess.Popen([str(exe), "convert", f"{src}:factory", "-o", str(target), "--overwrite"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "EDGE_SDK_NO_PROGRESS": "1"})
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the exporter never traced the model"
            time.sleep(0.1)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, (proc.returncode, err)
    assert "interrupted" in err and "Traceback" not in err and "internal error" not in err, err
    assert "TorchScript" not in err and "falling back" not in err, err  # no fallback exporter ran
    assert _snapshot(target) == before  # the old bundle, byte for byte
    Bundle.open(target)  # and it still verifies
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*"))  # the writer's temp folder is gone


API_CASE = """
import json, os, signal, sys, threading, time
import edge_sdk
from edge_sdk.guard.interrupt import Interrupted

calls = []

def progress(component, fmt, prec, stage):
    calls.append(stage)
    if stage == "convert":  # the main thread is about to export: signal it from outside
        threading.Timer(0.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
        time.sleep(1.0)

try:
    edge_sdk.convert(sys.argv[1], sys.argv[2], overwrite=True, progress=progress)
    got = {"raised": None}
except Interrupted as e:
    got = {"raised": "Interrupted", "exit_code": e.exit_code, "keyboard": isinstance(e, KeyboardInterrupt)}
got.update(calls=calls, handler_restored=signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
print("RESULT" + json.dumps(got))
"""


def test_signal_in_process_api(tiny_bundle, tmp_path, tiny_factory):
    """API: a SIGTERM raised into convert() surfaces as Interrupted (a KeyboardInterrupt), exit code 143;
    the converter never falls back and publishes nothing. In a fresh interpreter: the signal goes to
    the whole process, which must not be the test runner holding every earlier test's native state."""
    import json
    import shutil

    target = tmp_path / "api.bundle"
    shutil.copytree(tiny_bundle, target)
    before = _snapshot(target)
    proc = subprocess.run([sys.executable, "-c", API_CASE, tiny_factory, str(target)], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert proc.returncode == 0 and line is not None, (proc.returncode, proc.stderr[-2000:])
    got = json.loads(line[len("RESULT"):])
    assert got["raised"] == "Interrupted" and got["exit_code"] == 143 and got["keyboard"], got
    assert "write" not in got["calls"] and "done" not in got["calls"], got
    assert _snapshot(target) == before
    assert got["handler_restored"]  # handlers restored
