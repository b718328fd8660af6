"""Reading files edge-sdk did not write: no links, regular files only, size caps, strict JSON/TOML.

Every reader of a manifest, state file, board profile, package manifest or config goes through
here, so one rule holds everywhere (docs/hardening.md, classes 5 and 6):

* the file is opened with ``O_NOFOLLOW | O_NONBLOCK`` (a symlink is refused, a FIFO does not hang),
  then ``fstat`` must say regular file and the size must be under the caller's cap;
* JSON with a duplicate key, ``NaN``/``Infinity`` or a number that overflows to infinity (``1e400``)
  is refused: two parsers could otherwise read two different documents, and every range check lets
  NaN through;
* TOML likewise refuses ``nan``/``inf`` (``tomllib`` already refuses duplicate keys).
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from edge_sdk.errors import EdgeSDKError, UsageError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

# Metadata (state, profiles, package manifests) is small; the manifest reader passes its own cap.
DEFAULT_MAX_BYTES = 1 << 20


def open_regular(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 error: type[EdgeSDKError] = UsageError, what: str = "file") -> tuple[int, os.stat_result]:
    """A read-only descriptor of ``path``, which must be a regular file (not a link) of at most
    ``max_bytes``, and its ``fstat``; the caller closes the descriptor."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{p}: {what} not found") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise error(f"{p}: {what} is a symbolic link; edge-sdk does not follow links it did not make",
                        hint="replace the link with the file itself") from None
        raise error(f"{p}: cannot open {what} ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{p}: {what} is not a regular file ({_kind(st.st_mode)})",
                        hint="give a plain file")
        if st.st_size > max_bytes:
            raise error(f"{p}: {what} is {st.st_size} bytes, over the {max_bytes} byte limit")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_regular(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 error: type[EdgeSDKError] = UsageError, what: str = "file", into: Any = None) -> bytes:
    """Return the bytes of ``path``, which must be a regular file (not a link) of at most ``max_bytes``.

    The size is checked on the open descriptor and again while reading, so a file that grows
    between ``fstat`` and ``read`` (or a device that never ends) is still cut off at the cap.
    ``into``: a writable buffer (memoryview-able, e.g. an engine's own tensor) of exactly the file's
    size, filled in place and returned: one copy of the file in memory, in memory the engine owns
    (reading into ``bytes`` holds the chunks and their join, two copies, at the peak).
    """
    p = Path(path)
    fd, st = open_regular(p, max_bytes=max_bytes, error=error, what=what)
    try:
        if into is not None:
            view = memoryview(into).cast("B")
            if view.nbytes != st.st_size:
                raise error(f"{p}: {what} is {st.st_size} bytes, expected {view.nbytes}")
            _read_into(fd, view, p, error, what)
            return into
        chunks = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise error(f"{p}: {what} is over the {max_bytes} byte limit")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_into(fd: int, view: memoryview, p: Path, error: type[EdgeSDKError], what: str) -> None:
    """Fill ``view`` from ``fd``; the file must end there (not shrink, not grow)."""
    size = view.nbytes
    got = 0
    with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
        while got < size:
            n = f.readinto(view[got:got + (64 << 20)])
            if not n:
                raise error(f"{p}: {what} shrank while being read ({got} of {size} bytes)")
            got += n
        if f.read(1):
            raise error(f"{p}: {what} grew while being read (over {size} bytes)")
    view.release()


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a link")):
        if test(mode):
            return name
    return "not a regular file"


class _StrictJSONError(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _StrictJSONError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise _StrictJSONError(f"number {text[:40]} is not finite (NaN, infinity or overflow)")
    return v


def _constant(token: str) -> Any:
    raise _StrictJSONError(f"{token} is not a JSON number")


def loads_json(data: bytes | str, *, source: str, error: type[EdgeSDKError] = UsageError) -> Any:
    """Parse JSON strictly: UTF-8, no duplicate keys, no NaN/Infinity, no overflow, nesting bombs
    (RecursionError) refused."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as e:
        raise error(f"{source}: not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_pairs, parse_float=_float, parse_constant=_constant)
    except _StrictJSONError as e:
        raise error(f"{source}: not valid JSON ({e})") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise error(f"{source}: not valid JSON ({e})".replace("\n", " ")) from None


def load_json(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES,
              error: type[EdgeSDKError] = UsageError, what: str = "JSON file") -> Any:
    """``read_regular`` + ``loads_json``."""
    return loads_json(read_regular(path, max_bytes=max_bytes, error=error, what=what), source=str(path), error=error)


def loads_toml(data: bytes | str, *, source: str, error: type[EdgeSDKError] = UsageError) -> dict[str, Any]:
    """Parse TOML strictly: UTF-8, no duplicate keys (tomllib), no nan/inf."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as e:
        raise error(f"{source}: not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        return tomllib.loads(text, parse_float=_float)
    except _StrictJSONError as e:
        raise error(f"{source}: not valid TOML ({e})") from None
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as e:
        raise error(f"{source}: not valid TOML ({e})".replace("\n", " ")) from None


def load_toml(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES,
              error: type[EdgeSDKError] = UsageError, what: str = "TOML file") -> dict[str, Any]:
    return loads_toml(read_regular(path, max_bytes=max_bytes, error=error, what=what), source=str(path), error=error)
