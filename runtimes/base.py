"""The one interface every runtime adapter implements: open, describe, run, close."""

from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge_sdk.errors import InferenceError, InputError
from edge_sdk.manifest import TensorSpec
from edge_sdk.units import MB  # noqa: F401 - the adapters' import of it


def first_line(e: BaseException, skip: tuple[str, ...] = ()) -> str:
    """The informative line of an engine's error for our one-line messages: the first non-empty
    one not starting with ``skip`` (source locations some engines print first), at most 400
    characters; the exception's type name when it has no text."""
    text = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    useful = [ln for ln in text if not ln.startswith(skip)] if skip else text
    return (useful or text or [type(e).__name__])[0][:400]


def read_verified(path: Path, size: int, digest: str, *, into: Any = None) -> bytes:
    """Read ``path`` (no link, regular file) once and check its size and sha256 against the manifest.
    ``into``: a writable buffer of ``size`` bytes to read into (an engine's own memory), returned."""
    import hashlib

    from edge_sdk.errors import IntegrityError
    from edge_sdk.guard.safeio import read_regular

    data = read_regular(path, max_bytes=size, error=IntegrityError, what="model file", into=into)
    view = memoryview(data).cast("B")  # an engine's buffer may be typed (a numpy array, a tensor)
    if view.nbytes != size or hashlib.sha256(view).hexdigest() != digest:
        raise _modified(path, "after the bundle was verified (size or sha256 differs)")
    return data


def _modified(path: Path, when: str) -> Exception:
    """The IntegrityError for a model file that changed ``when``."""
    from edge_sdk.errors import IntegrityError

    return IntegrityError(f"model file {path} changed {when}",
                          hint="something modified the bundle while it was in use; copy it again")


# Where a descriptor can be opened again by name: an engine that loads models by path is given the
# descriptor a verified file was hashed through, so nothing can be swapped in between.
FD_PATHS = Path("/proc/self/fd")


def pin_verified(path: Path, size: int, digest: str) -> tuple[int, os.stat_result]:
    """Open ``path`` (no link, regular file) and check its size and sha256 against the manifest,
    hashing through that descriptor without holding the bytes; it stays open (the caller closes it)."""
    import hashlib

    from edge_sdk.errors import IntegrityError
    from edge_sdk.guard.safeio import open_regular

    fd, st = open_regular(path, max_bytes=size, error=IntegrityError, what="model file")
    try:
        h, total = hashlib.sha256(), 0
        while chunk := os.read(fd, 16 * MB):
            h.update(chunk)
            total += len(chunk)
            if total > size:
                break
        if total != size or h.hexdigest() != digest:
            raise _modified(path, "after the bundle was verified (size or sha256 differs)")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _changed(path: Path, fd: int, st: os.stat_result) -> bool:
    """Whether the pinned file was written (size, mtime, ctime: a write moves ctime, which no user
    can set back) or ``path`` names another file now."""
    now = os.fstat(fd)
    try:
        named = os.stat(path, follow_symlinks=False)
    except OSError:
        return True
    return ((now.st_size, now.st_mtime_ns, now.st_ctime_ns) != (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            or (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino))


@functools.cache
def _glibc() -> Any:
    """glibc, for its allocator controls; None elsewhere (musl, macOS, Windows)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


# glibc's mmap threshold: allocations at least this large are mapped and unmapped on their own.
MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_MALLOPT: bool | None = None  # whether keep_large_buffers_mapped took effect (None: not called yet)


def keep_large_buffers_mapped() -> None:
    """Fix glibc's mmap threshold at ``MMAP_THRESHOLD`` (process-wide, once; a no-op elsewhere).

    glibc raises the threshold to the size of each large buffer freed (up to 32 MB), so an engine's
    per-call scratch, released between components (``Runtime.release_scratch``) and allocated
    again, lands on the heap the second time, where holes keep it from the OS: the SD-shaped
    pipeline on OpenVINO grew by 17 MB after its first generation and stayed there. Fixed, such
    buffers stay mmapped and go back whole when freed (benchmarks/RESULTS.md, peers: SD-shaped reading)."""
    global _MALLOPT
    if _MALLOPT is None:
        libc = _glibc()
        _MALLOPT = bool(libc and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def give_back_freed_memory() -> None:
    """Return freed heap to the OS (glibc's malloc_trim(0)); a no-op elsewhere. An engine's compile
    frees large scratch buffers and source weights, and glibc keeps such frees in its arenas (its
    mmap threshold rises after large frees), so without this the process's RSS, and the next
    model's peak on top of it, stays as high as the compile's."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


class Runtime(ABC):
    """An opened model on one engine and device.

    Subclasses set ``name`` and ``formats`` and implement ``probe``, ``_open``, ``_run`` and
    ``close``. ``run`` checks the feeds against the model's own signature first, so a wrong name,
    rank, fixed dimension or dtype is an ``InputError`` rather than an engine's traceback.
    """

    name: ClassVar[str]
    # Everything about an engine lives on its class; the planner, memory estimate, packaging,
    # bench and tune read these through ``edge_sdk.runtimes.registry``, never a table of their own.
    formats: ClassVar[tuple[str, ...]]  # formats it opens (edge_sdk.formats names), preferred first
    # Devices this adapter understands; "auto" picks the best present one.
    devices: ClassVar[tuple[str, ...]] = ("auto", "cpu")
    probe_device: ClassVar[str] = "cpu"  # where the planner's memory probe opens it on this machine
    # The process before any session (Python, numpy, the engine's library), for plans made where
    # the engine cannot be probed.
    base_memory: ClassVar[int] = 60 * MB
    plan_options: ClassVar[Mapping[str, Any]] = {}  # session options every plan gives it (the probe too)
    # Options for sessions run one after another in a chain (stream parts, DeepCache's paths), where
    # the engine's default behaviour between runs (e.g. threads spinning) costs the next session.
    chained_options: ClassVar[Mapping[str, Any]] = {}
    # Options for a component streamed part by part (a board plan's last rung, where memory comes first).
    streamed_options: ClassVar[Mapping[str, Any]] = {}
    # True: the engine loads models by path. Verified files are then hashed through descriptors held
    # open while it loads (``verified_path``) instead of read into memory and handed over as bytes:
    # ONNX Runtime keeps a second copy of a model given as bytes (SD 1.5's int8-weight UNet: 1773 vs
    # 947 MB held, 2495 vs 1179 MB at the open's peak; benchmarks/RESULTS.md, issue 16).
    loads_by_path: ClassVar[bool] = False
    # How a batched call holds the fixed part of a call's activations (``c0``, what a call holds
    # whatever its size): False, per batch item (ONNX Runtime: SD 1.5's Pi 4 plan with batched CFG,
    # counted once, was estimated at 2195 MB and measured 2921 MB); True, once per call (OpenVINO's
    # CPU plugin lays a UNet's weights out for the CPU on its first call, 2.4-2.7 GB at any size).
    batch_holds_fixed_once: ClassVar[bool] = False
    # Whether an attention's [cells x cells] score matrix is held whole: then the measured fit has a
    # quadratic term, and a decoder's a floor of one fp32 matrix (a probe at small sizes hides it).
    # False where the engine fuses attention (OpenVINO's CPU plugin: a test VAE decoder at 128x128
    # cells measured 99 MB, where a whole score matrix is 1 GB; the floor had put its estimate at 3.8x).
    materialises_attention: ClassVar[bool] = True
    install_hint: ClassVar[str] = ""  # what to install when it is missing
    module: ClassVar[str | None] = None  # the engine's Python module (versions in bench reports)
    # Among runtimes opening one format, lower is chosen first when nothing else decides.
    rank: ClassVar[int] = 100
    # False: never chosen by format alone (a server proxy needs a URL the planner is given).
    plannable: ClassVar[bool] = True
    # Native calls run in a watched worker thread (Ctrl-C, EDGE_SDK_CALL_TIMEOUT); an adapter whose
    # client is bound to the thread that made it (and is stoppable on its own) says False.
    watched: ClassVar[bool] = True
    host_only: ClassVar[bool] = False  # a reference for validation, never a device runtime
    # Seconds one call may take; None: EDGE_SDK_CALL_TIMEOUT or the default (runtimes/watch.py).
    call_timeout: float | None = None

    @classmethod
    def tune_options(cls, device: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """What `edge-sdk tune` may add to a component's options on ``device``: options that change
        speed only (tried for every component this runtime runs), and options that reduce the
        arithmetic's precision (tried per component, kept only where the image meets the quality
        bar; None where this machine has no such arithmetic). ``({}, None)``: nothing to try."""
        return {}, None

    @classmethod
    def warm_up(cls, device: str, threads: int | None, options: Mapping[str, Any]) -> Any:
        """For the memory probe: the engine's one-time set-up (plugin, thread pools) done on a model
        of its own, before the artifact is opened; returns what keeps it alive. None (the default):
        the probe opens a second session beside the first instead and counts what the first cost
        more as set-up, which fails where sessions of one model share weights."""
        return None

    @classmethod
    def open_chain(cls, paths: Sequence[Path], outputs: Sequence[str], **kwargs: Any) -> Runtime | None:
        """One session over a chain of artifacts (a component's stream parts, in run order) joined
        into one graph: each part's inputs wired to the outputs of the part before it that made
        them; ``outputs`` name the joined graph's outputs; ``kwargs`` as for the constructor, with
        ``verified`` covering every part's files. The engine then plans one activation arena, not
        one per part. None where the engine cannot join graphs: the caller runs the parts in turn."""
        return None

    def __init__(self, path: str | Path, *, device: str = "auto", threads: int | None = None,
                 options: dict[str, Any] | None = None,
                 verified: Iterable[tuple[Path, int, str]] | None = None) -> None:
        self.path = Path(path)
        # Hardening (issue 14, class 4): with ``verified`` (path, size, sha256) records, every file is
        # hashed here and the engine is given what was hashed: the bytes read into memory, or (an
        # engine that loads by path, ``loads_by_path``) the descriptor they were read through, so a
        # file replaced after Bundle.open verified it cannot be what runs.
        self._bytes: dict[Path, bytes] = {}
        # (size, sha256) per verified file, kept so an adapter can read a file again, verified, later
        # (OpenVINO's per-shape compiles) instead of holding its weights between uses.
        self._records: dict[Path, tuple[int, str]] = {Path(f): (int(n), d) for f, n, d in verified or ()}
        self.device = device
        self.threads = threads
        self.options = dict(options or {})
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        # Hardening (issue 10): check the file's structure and external-data paths in Python
        # before native code parses it, so a truncated or hostile file is a ModelFileError.
        self.preflight(self.path)
        keep_large_buffers_mapped()
        self._pinned: dict[Path, tuple[int, os.stat_result]] = {}
        try:
            self.read_verified_files()
            self._open()
            self._check_pinned()
        finally:
            self._bytes.clear()  # the engine holds its own copy now
            for fd, _ in self._pinned.values():
                os.close(fd)
            self._pinned.clear()
            if self._records:
                give_back_freed_memory()

    def _check_pinned(self) -> None:
        """After the engine loaded: every pinned file is as it was hashed, else IntegrityError (the
        session is closed first)."""
        changed = [p for p, (fd, st) in self._pinned.items() if _changed(p, fd, st)]
        if changed:
            self.close()
            raise _modified(changed[0], "while it was being loaded")

    def verified_path(self, path: Path) -> str:
        """What the engine should open for ``path``: the descriptor it was hashed through
        (``/proc/self/fd/N``) when the model is that one file; otherwise the path itself, whose
        files are checked unchanged once the engine has loaded them (``_check_pinned``)."""
        pinned = self._pinned.get(Path(path))
        if pinned is not None and len(self._pinned) == 1:
            return str(FD_PATHS / str(pinned[0]))
        return str(path)

    def read_verified_files(self) -> None:
        """Check every verified file against its record: pinned by a descriptor for an engine that
        loads by path (``loads_by_path``), else read (again) into ``verified_bytes``."""
        if self.loads_by_path and FD_PATHS.is_dir():
            for fpath, (size, digest) in self._records.items():
                self._pinned[fpath] = pin_verified(fpath, size, digest)
            return
        for fpath, (size, digest) in self._records.items():
            engine_buffer = self._buffer_for(fpath, size)
            if engine_buffer is None:
                self._bytes[fpath] = read_verified(fpath, size, digest)
            else:
                read_verified(fpath, size, digest, into=engine_buffer[1])
                self._bytes[fpath] = engine_buffer[0]

    def _buffer_for(self, path: Path, size: int) -> tuple[Any, Any] | None:
        """(an engine object, its writable memory of ``size`` bytes) to read verified ``path`` into,
        so the engine owns the only copy (``verified_bytes`` then returns that object); None: bytes."""
        return None

    def verified_bytes(self, path: Path) -> bytes | None:
        """The verified bytes of ``path`` (when the runtime was opened with ``verified``), else None."""
        return self._bytes.get(Path(path))

    @classmethod
    def preflight(cls, path: Path) -> None:
        """Check ``path``'s structure before the engine parses it: its format descriptor's check."""
        from edge_sdk.guard.modelcheck import preflight

        preflight(path, cls.formats[0] if len(cls.formats) == 1 else None)

    # -- what the engine offers here -----------------------------------------------------------
    @classmethod
    @abstractmethod
    def probe(cls) -> dict[str, Any]:
        """{'available': bool, 'reason': str, 'version': str|None, 'devices': [...]} for doctor."""

    # -- lifecycle -----------------------------------------------------------------------------
    @abstractmethod
    def _open(self) -> None:
        """Load ``self.path`` on ``self.device``; fill ``self.inputs`` and ``self.outputs``."""

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run with checked feeds; return every output by name."""

    def close(self) -> None:  # noqa: B027 - optional for adapters holding nothing
        """Release the engine's resources."""

    def release_scratch(self) -> None:  # noqa: B027 - optional: adapters whose engine can do it
        """Free what a run keeps between calls (intermediate tensors, scratch), the model staying
        loaded; the next run allocates it again. The pipeline calls it when it moves on to another
        component, so resident components' scratch does not add up at the peak."""

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def active_device(self) -> str:
        """What the engine actually runs on (e.g. 'CUDAExecutionProvider', 'CPU')."""
        return self.device

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from edge_sdk.runtimes.watch import call_deadline, watched_call

        where = f"{self.name} model {self.path.name}"
        if getattr(self, "_runaway", False):
            raise InferenceError(f"{where}: an earlier call outlived its deadline and is still running; this session "
                                 "cannot run again", hint="open the bundle again, or run it with --isolate "
                                                          "(isolate=True) so that a hung call is killed")
        checked = self.check_feeds(feeds)
        if not self.watched:
            return self._run(checked)
        # Stoppable by Ctrl-C and by the call deadline: a graph may never terminate (runtimes/watch.py).
        timeout, source = call_deadline(self.call_timeout)
        return watched_call(lambda: self._run(checked), self._cancel, what=where, timeout=timeout, source=source,
                            on_runaway=self._mark_runaway)

    def _mark_runaway(self) -> None:
        # The engine is still inside a call: another call on it would race that one (LiteRT's
        # interpreter is not thread-safe), and freeing it could pull memory from under it.
        self._runaway = True

    def _cancel(self) -> bool:
        """Ask the engine to stop the call in flight; True if it was asked (adapters that can override this)."""
        return False

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        where = f"{self.name} model {self.path.name}"
        expected = {t.name: t for t in self.inputs}
        missing = [n for n in expected if n not in feeds]
        extra = [n for n in feeds if n not in expected]
        if missing or extra:
            raise InputError(f"{where}: inputs {sorted(feeds)} do not match the model's {sorted(expected)}",
                             hint=f"missing {missing}, unexpected {extra}")
        out = {}
        for name, spec in expected.items():
            arr = np.asarray(feeds[name])
            try:
                want_dtype = np.dtype(spec.dtype)
            except TypeError:  # a type numpy has no name for (bfloat16, float8): the engine checks it
                want_dtype = arr.dtype
            if arr.dtype != want_dtype:
                raise InputError(f"{where}: input {name!r} has dtype {arr.dtype}, the model takes {spec.dtype}",
                                 hint=f"cast with .astype(np.{spec.dtype})")
            if arr.ndim != len(spec.shape):
                raise InputError(f"{where}: input {name!r} has shape {arr.shape}, the model takes "
                                 f"{_fmt_shape(spec.shape)} (rank {len(spec.shape)})")
            for axis, (got, want) in enumerate(zip(arr.shape, spec.shape, strict=False)):
                if isinstance(want, int) and want > 0 and got != want:
                    raise InputError(f"{where}: input {name!r} has shape {arr.shape}, the model takes "
                                     f"{_fmt_shape(spec.shape)} (axis {axis} must be {want})")
            # np.ascontiguousarray would turn a 0-d scalar into shape (1,); require keeps the rank.
            out[name] = np.require(arr, requirements="C")
        return out


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


NUMPY_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
    "tensor(uint64)": "uint64", "tensor(uint32)": "uint32", "tensor(uint16)": "uint16", "tensor(uint8)": "uint8",
    "tensor(bool)": "bool", "tensor(string)": "object",
}
