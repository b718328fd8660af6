"""Enforcing the cap: the watcher stops a run that crosses it; cgroup v2 where the system allows one."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.errors import MemoryCapError, RuntimeUnavailableError
from edge_sdk.measure.memory import MB, MemoryWatch, cgroup_support, check_cap, peak_rss_bytes, rss_bytes, run_limited
from edge_sdk.planning.planner import PlanRequest, plan


def _wait_for(pred, timeout=2.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not pred():
        time.sleep(0.005)


def test_watcher_raises_in_the_main_thread_once_the_cap_is_crossed():
    cap = rss_bytes() + 64 * MB
    with pytest.raises(MemoryCapError, match=r"over its cap of \d+ MB") as e:
        with MemoryWatch(cap, interval_s=0.002) as w:
            block = np.ones(160 * MB // 8)  # touched pages: RSS really grows by 160 MB
            _wait_for(lambda: w.exceeded_at is not None)
            check_cap()  # what Sessions.run and decode_tiled call between component calls
    assert "edge-sdk plan" in e.value.hint
    assert w.peak_bytes >= cap and w.exceeded_bytes > cap
    del block
    check_cap()  # a stopped watcher is no longer consulted


def test_watcher_within_the_cap_is_silent_and_measures_the_peak():
    with MemoryWatch(rss_bytes() + 512 * MB, interval_s=0.002) as w:
        block = np.ones(32 * MB // 8)
        _wait_for(lambda: w.peak_bytes >= rss_bytes() - 4 * MB)
        check_cap()
    del block
    # The sampled peak sees the 32 MB block and never exceeds the kernel's own high-water mark.
    assert w.exceeded_at is None and 0 < w.peak_bytes <= peak_rss_bytes()


@pytest.mark.slow
def test_a_generation_over_its_cap_stops_with_memory_cap_error(heavy_bundle):
    import edge_sdk

    b = Bundle.open(heavy_bundle)
    p = plan(b, "jetson-agx-orin-64gb", PlanRequest(height=160, width=160, installed_only=True))
    assert p.decode_tiling is None  # whole-image decode: ~0.2 GB of attention at 80x80 cells
    gen = edge_sdk.load(b, plan=p)
    try:
        cap = rss_bytes() + 96 * MB  # well under what this decode needs
        with pytest.raises(MemoryCapError):
            with MemoryWatch(cap, interval_s=0.002):
                gen.generate(steps=1, class_labels=[3], height=160, width=160)
    finally:
        gen.close()


def test_cgroup_support_says_what_is_possible_here():
    s = cgroup_support()
    assert s.method in (None, "cgroup2", "systemd-run")
    assert s.reason  # doctor shows it
    argv = [sys.executable, "-c", "import numpy as np; a = np.ones(400 * 2**20 // 8); print(a.sum())"]
    if s.method is None:
        with pytest.raises(RuntimeUnavailableError, match="no kernel memory limit is possible here"):
            run_limited(argv, 200 * MB)
    else:  # pragma: no cover - only where a cgroup v2 limit is available to this user
        with pytest.raises(MemoryCapError):
            run_limited(argv, 200 * MB, timeout=60)
        ok = run_limited([sys.executable, "-c", "print(1)"], 200 * MB, timeout=60)
        assert ok.returncode == 0 and ok.stdout.strip() == "1"


def test_watching_a_child_kills_it_at_the_cap_and_the_parent_gets_a_typed_error():
    import subprocess

    grow = ("import numpy as np, time, sys\nblocks = []\nprint('ready', flush=True)\nsys.stdin.readline()\n"
            "for i in range(40):\n    blocks.append(np.ones(16 * 2**20 // 8))\n    time.sleep(0.01)\nprint('done')\n")
    child = subprocess.Popen([sys.executable, "-c", grow], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        cap = rss_bytes(child.pid) + 200 * MB  # the child would reach ~640 MB more
        watch = MemoryWatch(cap, interval_s=0.002, pid=child.pid, kill=True, where="the child run").start()
        child.stdin.write("go\n")
        child.stdin.flush()
        child.wait(timeout=60)
        watch.stop()
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -9  # stopped by the watcher, long before it finished
    with pytest.raises(MemoryCapError, match=r"the child run used \d+ MB .* was killed"):
        watch.check()
    # Overshoot is bounded by what the child allocates between two samples (16 MB blocks every
    # 10 ms, sampled every 2 ms): at most a couple of blocks past the cap.
    assert cap < watch.peak_bytes <= cap + 48 * MB
