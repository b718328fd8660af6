"""Crash isolation: work in a supervised child dies natively, hangs or is OOM-killed, and the
parent (this pytest process) survives with a typed SupervisedProcessError naming the signal.

The crashes are real: a NULL read through ctypes (SIGSEGV), a raised SIGBUS, a SIGKILL sent to
the child from outside as the kernel's OOM killer does, and a call that never returns.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import edge_sdk
from edge_sdk.errors import BundleError, CancelledError, SupervisedProcessError, UsageError
from edge_sdk.guard.supervise import SupervisedGenerator, run_supervised

pytestmark = pytest.mark.slow  # child processes per case, some killed by the OOM guard: the full run


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); look at its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_result_comes_back():
    assert run_supervised("math:fsum", [0.1] * 10) == 1.0
    arr = run_supervised("numpy:arange", 5)
    np.testing.assert_array_equal(arr, np.arange(5))


def test_segfault_in_child_is_a_typed_error():
    with pytest.raises(SupervisedProcessError, match="died by SIGSEGV"):
        run_supervised("ctypes:string_at", 0)  # reads address 0: a real segmentation fault


def test_sigbus_in_child_is_a_typed_error():
    with pytest.raises(SupervisedProcessError, match="died by SIGBUS") as ei:
        run_supervised("signal:raise_signal", signal.SIGBUS)
    assert "memory-mapped" in str(ei.value)  # the hint says what usually causes it


def test_hang_is_killed_by_the_watchdog():
    with pytest.raises(SupervisedProcessError, match="within 1 s; it was killed"):
        run_supervised("time:sleep", 600, timeout=1)


def test_edge_sdk_errors_keep_their_type():
    with pytest.raises(BundleError, match="bundle not found") as ei:
        run_supervised("edge_sdk.bundle:Bundle.open", "/no/such/bundle")
    assert type(ei.value) is BundleError
    assert ei.value.hint == "give the folder that `edge-sdk convert -o` wrote"


def test_isolated_generate_matches_in_process(tiny_bundle):
    with edge_sdk.load(tiny_bundle, threads=1) as gen:
        want = gen.generate(steps=3, seed=5)
    iso = edge_sdk.load(tiny_bundle, isolate=True, threads=1)
    try:
        assert isinstance(iso, SupervisedGenerator) and iso.pid != os.getpid()
        steps = []
        got = iso.generate(steps=3, seed=5, callback=lambda info: steps.append((info.index, info.sample.shape)))
    finally:
        iso.close()
    # Same code, same ORT build and thread count, same inputs: the same bits.
    np.testing.assert_array_equal(got.raw, want.raw)
    np.testing.assert_array_equal(got.images, want.images)
    assert steps == [(0, (1, 3, 32, 32)), (1, (1, 3, 32, 32)), (2, (1, 3, 32, 32))]


def test_oom_kill_mid_generation_leaves_the_parent_alive(tiny_bundle):
    iso = edge_sdk.load(tiny_bundle, isolate=True, threads=1)
    try:
        first = iso.pid

        def kill_at_step_2(info):
            if info.index == 2:
                os.kill(first, signal.SIGKILL)  # what the kernel's OOM killer sends

        with pytest.raises(SupervisedProcessError, match="died by SIGKILL") as ei:
            iso.generate(steps=10, seed=0, callback=kill_at_step_2)
        assert "OOM killer" in str(ei.value)
        assert not _alive(first)
        # The generator recovers: the next call starts a fresh child and works.
        again = iso.generate(steps=2, seed=0)
        assert iso.pid not in (None, first) and again.images.shape == (1, 32, 32, 3)
    finally:
        iso.close()


def test_cancel_and_usage_errors_cross_the_process_boundary(tiny_bundle):
    with edge_sdk.load(tiny_bundle, isolate=True) as iso:
        with pytest.raises(CancelledError, match="cancelled by the callback after step 2/5"):
            iso.generate(steps=5, callback=lambda info: info.index != 1)
        with pytest.raises(UsageError, match="unknown sampler"):
            iso.generate(steps=1, sampler="nope")
        pid = iso.pid
    assert not _alive(pid)  # close() ends the child


def test_cli_run_isolate_writes_the_same_image(cli, tiny_bundle, tmp_path):
    a = cli("run", str(tiny_bundle), "--steps", "2", "--seed", "4", "--threads", "1", "--out", str(tmp_path / "a.png"))
    b = cli("run", str(tiny_bundle), "--steps", "2", "--seed", "4", "--threads", "1", "--isolate",
            "--out", str(tmp_path / "b.png"))
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_a_callback_that_raises_does_not_wedge_the_child(tiny_bundle):
    with edge_sdk.load(tiny_bundle, isolate=True) as iso:
        def boom(info):
            raise KeyError("from the app's callback")

        with pytest.raises(KeyError):
            iso.generate(steps=3, callback=boom)
        assert iso.generate(steps=1).images.shape == (1, 32, 32, 3)  # a fresh child serves the next call
