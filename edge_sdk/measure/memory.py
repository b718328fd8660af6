"""Keeping a run inside its memory cap: a peak-memory watcher, and a cgroup v2 limit where possible.

Two layers, from strongest to weakest:

1. **cgroup v2** (``run_limited``): the run is a child process inside a cgroup whose
   ``memory.max`` is the cap, so the kernel itself stops it; an OOM kill inside that group
   becomes ``MemoryCapError`` in the parent. Needs a writable cgroup v2 hierarchy with the memory
   controller delegated to us, or ``systemd-run --user --scope -p MemoryMax=`` (a systemd user
   session). A virtual-memory ulimit is not used on purpose: CUDA and TensorRT reserve far more
   address space than they ever touch, so RLIMIT_AS breaks GPU stacks long before memory is short.
2. **Watcher** (``MemoryWatch``), always available: a thread samples the process's resident set
   every few milliseconds; when it crosses the cap a flag is set, and ``check_cap()`` (called
   between component calls, between decode tiles and from step callbacks) raises
   ``MemoryCapError`` in the main thread, before the kernel's OOM killer picks a victim. On boards
   with unified memory (Jetson) GPU allocations live outside the process's RSS (nvmap), so there
   the watcher counts RSS plus the growth of the system's used memory since the run started.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_sdk.errors import MemoryCapError, RuntimeUnavailableError
from edge_sdk.units import MB


# -- measurements ------------------------------------------------------------------------------
def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default)."""
    try:
        with open(f"/proc/{pid or 'self'}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import psutil

        return int(psutil.Process(pid).memory_info().rss)


def peak_rss_bytes(pid: int | None = None) -> int:
    """The kernel's high-water mark of the resident set (VmHWM), or ru_maxrss where /proc lacks it."""
    try:
        with open(f"/proc/{pid or 'self'}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return int(peak if sys.platform == "darwin" else peak * 1024)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def system_used_bytes() -> int:
    """MemTotal - MemAvailable: what the whole system uses, GPU allocations on unified memory included."""
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.total - vm.available)


# -- the watcher -------------------------------------------------------------------------------
_active: list[MemoryWatch] = []
_active_lock = threading.Lock()


class MemoryWatch:
    """Samples memory on a thread; ``check()`` raises MemoryCapError once the cap was crossed.

    Use as a context manager around a run. ``peak_bytes`` is the highest sample seen (the
    process's RSS, or on unified memory RSS plus system growth). Leaving the block raises if the
    cap was crossed after the last check, so an overrun never passes silently.
    """

    def __init__(self, cap_bytes: int | None, *, interval_s: float = 0.005, unified: bool = False,
                 where: str = "this run", pid: int | None = None, kill: bool = False) -> None:
        """Watch this process, or process ``pid`` (a child running the generation).

        ``kill=True`` (only with ``pid``) SIGKILLs that child the moment it crosses the cap, so a
        single runtime call that overshoots is stopped at once instead of at the next call
        boundary; ``check()`` in the parent then raises MemoryCapError.
        """
        if kill and pid is None:
            raise ValueError("kill=True needs the pid of a child process to stop")
        self.pid = pid
        self.kill = kill
        self.cap = int(cap_bytes) if cap_bytes else None
        self.interval = interval_s
        self.unified = unified
        self.where = where
        self.peak_bytes = 0
        self.exceeded_at: float | None = None
        self.exceeded_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rss0 = 0
        self._sys0 = 0

    def sample(self) -> int:
        try:
            rss = rss_bytes(self.pid)
        except Exception:  # noqa: BLE001 - the watched child is gone: nothing more to count
            return 0
        if not self.unified:
            return rss
        # GPU memory on unified boards is not in RSS; count the system's growth beyond our RSS growth.
        extra = (system_used_bytes() - self._sys0) - (rss - self._rss0)
        return rss + max(0, extra)

    def _loop(self) -> None:
        while not self._stop.is_set():
            v = self.sample()
            if v > self.peak_bytes:
                self.peak_bytes = v
            if self.cap is not None and v > self.cap and self.exceeded_at is None:
                self.exceeded_at, self.exceeded_bytes = time.monotonic(), v
                if self.kill and self.pid is not None:
                    try:
                        os.kill(self.pid, 9)
                    except ProcessLookupError:
                        pass
            self._stop.wait(self.interval)

    def start(self) -> MemoryWatch:
        if self.cap is None:  # nothing to enforce: no thread
            return self
        self._rss0 = rss_bytes(self.pid)
        self._sys0 = system_used_bytes() if self.unified else 0
        self.peak_bytes = self.sample()
        self._thread = threading.Thread(target=self._loop, name="edge-sdk-memory-watch", daemon=True)
        self._thread.start()
        with _active_lock:
            _active.append(self)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with _active_lock:
            if self in _active:
                _active.remove(self)

    def check(self) -> None:
        if self.exceeded_at is not None:
            what = "resident + unified GPU memory" if self.unified else "resident memory"
            how = f"process {self.pid} was killed" if self.kill else "stopped"
            raise MemoryCapError(
                f"{self.where} used {self.exceeded_bytes / MB:.0f} MB of {what}, over its cap of "
                f"{self.cap / MB:.0f} MB; {how} before the system ran out",
                hint="plan for a smaller --size, int8, or decode tiles (edge-sdk plan BUNDLE --board NAME)")

    def __enter__(self) -> MemoryWatch:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()
        if exc_type is None:
            self.check()


def check_cap() -> None:
    """Raise MemoryCapError if any active watcher saw its cap crossed (cheap; call it often)."""
    for w in list(_active):
        w.check()


# -- cgroup v2 ---------------------------------------------------------------------------------
@dataclass
class CgroupSupport:
    """What this system allows for a kernel-enforced memory limit."""

    method: str | None  # "cgroup2", "systemd-run" or None
    reason: str  # why, in words (for doctor and for refusals)
    path: Path | None = None  # the cgroup2 folder new groups are made under


def _cgroup2_mount() -> Path | None:
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split()[:1] == ["cgroup2"]:
                    return Path(left.split()[4])
    except OSError:
        return None
    return None


def _own_cgroup2() -> str | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
    except OSError:
        return None
    return None


def _memory_for_children(base: Path) -> bool:
    ctl = base / "cgroup.subtree_control"
    if "memory" in ctl.read_text().split():
        return True
    try:  # refused by the kernel when ``base`` itself holds processes ("no internal processes")
        ctl.write_text("+memory")
    except OSError:
        return False
    return True


def cgroup_support() -> CgroupSupport:
    """Find a way to run a child under a real memory limit here, or say why there is none."""
    mount, own = _cgroup2_mount(), _own_cgroup2()
    reasons = []
    if mount is None or own is None:
        reasons.append("no cgroup v2 hierarchy is mounted")
    else:
        base = mount / own.lstrip("/")
        controllers = ((base / "cgroup.controllers").read_text().split()
                       if (base / "cgroup.controllers").exists() else [])
        if "memory" not in controllers:
            reasons.append(f"the memory controller is not delegated to {base} (cgroup v1 or hybrid mode)")
        elif not os.access(base, os.W_OK) or not os.access(base / "cgroup.subtree_control", os.W_OK):
            reasons.append(f"{base} is not writable by this user")
        elif _memory_for_children(base):
            return CgroupSupport("cgroup2", f"writable cgroup v2 at {base}", base)
        else:
            reasons.append(f"memory cannot be enabled for child groups of {base} (it holds processes)")
    if shutil.which("systemd-run"):
        try:
            ok = subprocess.run(["systemd-run", "--user", "--scope", "--quiet", "-p", "MemoryMax=64M", "true"],
                                capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return CgroupSupport("systemd-run", "systemd-run --user --scope works (MemoryMax)")
        reasons.append("systemd-run --user --scope fails (no systemd user session)")
    else:
        reasons.append("systemd-run is not installed")
    return CgroupSupport(None, "; ".join(reasons))


def run_limited(argv: Sequence[str], cap_bytes: int, *, timeout: float | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``argv`` as a child process under a kernel memory limit of ``cap_bytes``.

    An OOM kill inside the limit becomes MemoryCapError; no way to limit memory here is a
    RuntimeUnavailableError saying why (the caller then falls back to ``MemoryWatch``).
    """
    support = cgroup_support()
    if support.method is None:
        raise RuntimeUnavailableError(f"no kernel memory limit is possible here: {support.reason}",
                                      hint="the in-process memory watcher still enforces the cap")
    if support.method == "systemd-run":
        full = ["systemd-run", "--user", "--scope", "--quiet", "-p", f"MemoryMax={int(cap_bytes)}",
                "-p", "MemorySwapMax=0", *argv]
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode in (-9, 137):
            raise MemoryCapError(f"{argv[0]} was stopped by its {cap_bytes / MB:.0f} MB memory limit")
        return proc
    assert support.path is not None
    group = support.path / f"edge-sdk-{os.getpid()}-{time.monotonic_ns()}"
    group.mkdir()
    try:
        (group / "memory.max").write_text(str(int(cap_bytes)))
        if (group / "memory.swap.max").exists():
            (group / "memory.swap.max").write_text("0")
        procs = str(group / "cgroup.procs")

        def enter_group() -> None:  # runs in the child between fork and exec
            with open(procs, "w") as f:
                f.write("0")

        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env,
                              preexec_fn=enter_group)
        events = dict(line.split() for line in (group / "memory.events").read_text().splitlines())
        if int(events.get("oom_kill", 0)) > 0:
            raise MemoryCapError(f"{argv[0]} was stopped by its {cap_bytes / MB:.0f} MB memory limit "
                                 f"(kernel OOM kill inside cgroup {group.name})")
        return proc
    finally:
        try:
            group.rmdir()
        except OSError:
            pass
