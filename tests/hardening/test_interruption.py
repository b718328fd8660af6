"""Interruption: a bundle write killed (SIGKILL) at any point leaves the old bundle or the new
complete one under the target name, never a partial one.

Two ways of killing:
- at named stages (``EDGE_SDK_TEST_KILL_AT``, see ``edge_sdk.guard.faults.STAGES``), both for a fresh
  target and for ``--overwrite`` of an existing bundle;
- after random delays, while a writer with ~24 MB of files is hashing, syncing and renaming.

The fast matrix drives ``BundleWriter`` in a small subprocess (the same commit code ``edge-sdk
convert`` ends in, with the tiny model's real ONNX file); the real ``edge-sdk convert`` is killed
at one stage by default and at every stage with ``-m slow``. Package/install interruption is
tested by the deploy tests (tests/deploy/test_install_releases.py).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_sdk.bundle import TMP_PREFIX, Bundle
from edge_sdk.guard.faults import ENV, STAGES

WRITER = r"""
import os, shutil, sys
from pathlib import Path
from edge_sdk.bundle import BundleWriter
from edge_sdk.manifest import TensorSpec
target, model, name, pad_mb = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with BundleWriter(target, name=name, overwrite=True) as w:
    w.add_component("denoiser", [TensorSpec("sample", "float32", ["batch", 3, "height", "width"]),
                                 TensorSpec("timestep", "float32", ["batch"])],
                    [TensorSpec("noise_pred", "float32", ["batch", 3, "height", "width"])])
    d = w.artifact_dir("denoiser", "onnx", "fp32")
    shutil.copyfile(model, d / "model.onnx")
    for i in range(pad_mb // 8):
        (d / f"pad{i}.bin").write_bytes(os.urandom(8 << 20))
    w.add_artifact("denoiser", "onnx", "fp32", d / "model.onnx")
    w.commit()
print("committed")
"""


def _writer(target: Path, model: Path, name: str, pad_mb: int = 0, kill_at: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if kill_at:
        env[ENV] = kill_at
    return subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(model), name, str(pad_mb)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _state(target: Path) -> str:
    """'absent', or the name of the complete, verified bundle at ``target``; fails on anything else."""
    if not target.exists():
        return "absent"
    b = Bundle.open(target)  # raises (failing the test) on a partial or unverifiable bundle
    return b.name


def _temps(parent: Path) -> list[Path]:
    return list(parent.glob(f"{TMP_PREFIX}*"))


@pytest.fixture
def model_file(tiny_bundle) -> Path:
    return tiny_bundle / "denoiser/onnx/fp32/model.onnx"


COMMIT_STAGES = [s for s in STAGES if s.startswith("commit:")]
# What is at the target after a kill at each stage: before the rename the old state, after it the new.
AFTER_KILL = {"commit:manifest": "old", "commit:synced": "old", "commit:renamed": "new"}


@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "overwrite"])
@pytest.mark.parametrize("stage", COMMIT_STAGES)
def test_writer_killed_at_stage(stage, existing, tmp_path, model_file):
    target = tmp_path / "m.bundle"
    if existing:
        assert _writer(target, model_file, "old").wait(120) == 0
    p = _writer(target, model_file, "new", kill_at=stage)
    p.wait(120)
    assert p.returncode == -signal.SIGKILL, p.stderr.read()
    want = AFTER_KILL[stage]
    expected = {"old": "old" if existing else "absent", "new": "new"}[want]
    assert _state(target) == expected
    # The next writer cleans up what the killed one left (its pid is gone) and succeeds.
    assert _writer(target, model_file, "again").wait(120) == 0
    assert _state(target) == "again"
    assert _temps(tmp_path) == []


def test_writer_killed_after_random_delays(tmp_path, model_file):
    """Kill a 24 MB bundle write after random delays: old or new, never partial."""
    target = tmp_path / "m.bundle"
    assert _writer(target, model_file, "old").wait(120) == 0
    # How long an undisturbed write takes here, to spread the kill times over it.
    t0 = time.monotonic()
    assert _writer(target, model_file, "old", pad_mb=24).wait(300) == 0
    full = time.monotonic() - t0
    rng = random.Random(7)
    seen = {"old": 0, "new": 0}
    for _ in range(8):
        p = _writer(target, model_file, "new", pad_mb=24)
        time.sleep(rng.uniform(0.05, full))
        p.send_signal(signal.SIGKILL)
        p.wait(60)
        state = _state(target)
        assert state in ("old", "new")
        seen[state] += 1
        if state == "new":  # put the old one back for the next round
            assert _writer(target, model_file, "old").wait(120) == 0
    assert sum(seen.values()) == 8


def _convert(cli, target: Path, stage: str | None, overwrite: bool):
    args = ["convert", "examples/tiny_unet.py:factory", "-o", str(target), "--name", "new", "-q"]
    # A SIGKILLed convert cannot remove its scratch folder: keep it under the test's own tmp.
    scratch = target.parent / "scratch"
    scratch.mkdir(exist_ok=True)
    env = {"TMPDIR": str(scratch), **({ENV: stage} if stage else {})}
    return cli(*(args + (["--overwrite"] if overwrite else [])), env=env, cwd=Path(__file__).resolve().parents[2])


def _old_bundle(tiny_bundle: Path, target: Path) -> None:
    import shutil

    shutil.copytree(tiny_bundle, target)
    data = json.loads((target / "manifest.json").read_text())
    data["name"] = "old"
    (target / "manifest.json").write_text(json.dumps(data))


@pytest.mark.slow
def test_convert_killed_before_rename_keeps_old_bundle(cli, tiny_bundle, tmp_path):
    target = tmp_path / "m.bundle"
    _old_bundle(tiny_bundle, target)
    r = _convert(cli, target, "commit:synced", overwrite=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert _state(target) == "old"


@pytest.mark.slow
@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "overwrite"])
@pytest.mark.parametrize("stage", STAGES)
def test_convert_killed_at_every_stage(stage, existing, cli, tiny_bundle, tmp_path):
    target = tmp_path / "m.bundle"
    if existing:
        _old_bundle(tiny_bundle, target)
    r = _convert(cli, target, stage, overwrite=existing)
    assert r.returncode == -signal.SIGKILL, r.stderr
    before = "old" if existing else "absent"
    assert _state(target) == ("new" if stage == "commit:renamed" else before)


def test_every_kill_point_is_still_in_the_code():
    """A rewrite that drops a kill point would make its interruption test pass vacuously (no kill)."""
    repo = Path(__file__).resolve().parents[2]
    text = "".join(p.read_text() for folder in ("edge_sdk", "converters") for p in (repo / folder).rglob("*.py"))
    missing = [s for s in STAGES if f'kill_point("{s}")' not in text]
    assert missing == []
