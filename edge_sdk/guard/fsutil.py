"""Small file-system helpers for atomic, durable writes."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_sdk.guard.faults import kill_point

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (and root itself), so a rename publishes data."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


@contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator:
    """Write ``path`` through a temporary file in the same folder, fsync it, rename it into place."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # a missing, read-only or virtual folder: the user's to fix, not a bug
        from edge_sdk.errors import UsageError

        raise UsageError(f"cannot write {path}: folder {path.parent} is not writable ({e.strerror})",
                         hint="choose an output path on a writable disk") from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux renameat2(RENAME_EXCHANGE); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def replace_dir(new: Path, target: Path) -> None:
    """Publish folder ``new`` at ``target``; an existing ``target`` is replaced.

    Where the kernel allows, the two are swapped in one atomic step so ``target`` is never missing;
    elsewhere the old folder is moved aside first (a crash between the two renames leaves it at
    ``.<name>.old-*``, never half-written).
    """
    new, target = Path(new), Path(target)
    if not target.exists():
        os.rename(new, target)
        kill_point("commit:renamed")
    elif _renameat2_exchange(new, target):
        kill_point("commit:renamed")  # interruption tests (edge_sdk.guard.faults); a no-op otherwise
        shutil.rmtree(new)  # ``new`` now holds the old contents
    else:
        aside = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, aside)
        os.rename(new, target)
        kill_point("commit:renamed")
        shutil.rmtree(aside, ignore_errors=True)
    fsync_dir(target.parent)
