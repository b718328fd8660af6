"""The package archive format: a plain POSIX ustar stream, optionally gzip-compressed.

Writing goes through ``tarfile`` with every header field fixed (mtime 0, uid/gid 0, empty owner
names, mode 0644/0755) and a gzip header with mtime 0 and no file name, so the same input gives
the same bytes.

Reading does NOT go through ``tarfile``: its extraction filters have had several bypasses
(CVE-2025-4138/4330/4517, CVE-2024-12718) and the Python here predates their fixes, and its header
parser has had its own bugs (CVE-2024-6232, CVE-2025-8194). A package needs only ustar regular
files and folders, so ``iter_members`` parses those 512-byte headers itself and refuses every other
entry type (links, devices, fifos, pax and GNU extension headers) with a message naming it.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from edge_sdk.errors import DeployError, UnsafePathError
from edge_sdk.guard.paths import check_relpath

BLOCK = 512
GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# What each refused tar entry type is, for the error message.
_TYPE_NAMES = {
    b"1": "a hard link", b"2": "a symbolic link", b"3": "a character device", b"4": "a block device",
    b"6": "a fifo", b"7": "a contiguous file", b"x": "a pax extended header", b"g": "a pax global header",
    b"L": "a GNU long-name header", b"K": "a GNU long-link header", b"S": "a GNU sparse file",
    b"V": "a GNU volume header", b"M": "a GNU multi-volume entry", b"D": "a GNU dump directory",
}
_REGULAR = (b"0", b"\x00")
_DIRECTORY = b"5"


@dataclass(frozen=True)
class Member:
    """One entry of a package archive: a regular file or a folder, with a checked relative name."""

    name: str  # relative POSIX path, no trailing slash
    is_dir: bool
    size: int
    mode: int


# -- writing -----------------------------------------------------------------------------------
class DeterministicTarWriter:
    """Writes folders and files into a ustar stream with fixed metadata, in the order given."""

    def __init__(self, fileobj: BinaryIO, *, compress: bool) -> None:
        self._gz = (gzip.GzipFile(filename="", mode="wb", fileobj=fileobj, mtime=0, compresslevel=6)
                    if compress else None)
        self._tar = tarfile.open(fileobj=self._gz or fileobj, mode="w", format=tarfile.USTAR_FORMAT)

    def _info(self, name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.size = size
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def add_dir(self, name: str) -> None:
        self._add(self._info(name, tarfile.DIRTYPE, 0o755, 0), None)

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._add(self._info(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))

    def add_file(self, name: str, path: Path, size: int, mode: int = 0o644) -> None:
        with open(path, "rb") as f:
            self._add(self._info(name, tarfile.REGTYPE, mode, size), f)

    def _add(self, info: tarfile.TarInfo, fileobj: BinaryIO | None) -> None:
        try:
            self._tar.addfile(info, fileobj)
        except ValueError as e:  # ustar limits: name over 255 bytes (or a final part over 100)
            raise DeployError(f"cannot store {info.name!r} in a package: {e}",
                              hint="shorten the bundle's file names") from None

    def close(self) -> None:
        self._tar.close()
        if self._gz is not None:
            self._gz.close()


# -- reading -----------------------------------------------------------------------------------
def check_name(rel: str, *, where: str) -> None:
    """A relative path with no '..', no empty part and no '.' part (one spelling per file)."""
    check_relpath(rel, where=where)
    if "." in rel.split("/"):
        raise UnsafePathError(f"{where}: path {rel!r} has a '.' part",
                              hint="this archive was not made by `edge-sdk package`")


def open_stream(path: Path) -> BinaryIO:
    """Open a package for reading: plain tar, or gzip by its magic bytes (never by its suffix)."""
    f = open(path, "rb")
    head = f.read(4)
    f.seek(0)
    if head[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    if head == _ZSTD_MAGIC:
        f.close()
        raise DeployError(f"{path} is zstd-compressed; edge-sdk packages are .tar or .tar.gz",
                          hint="re-create it with `edge-sdk package` (add --compress for gzip)")
    return f


def _read_exact(f: BinaryIO, n: int, where: str) -> bytes:
    chunks, left = [], n
    while left:
        try:
            b = f.read(left)
        except (OSError, EOFError, zlib.error) as e:  # corrupt or truncated gzip (BadGzipFile is an OSError)
            raise DeployError(f"{where}: the archive is corrupt ({e})", hint="copy the package again") from None
        if not b:
            raise DeployError(f"{where}: the archive is truncated",
                              hint="copy the package again (the upload stopped early?)")
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)


def _octal(field: bytes, what: str, where: str) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256: only for values ustar cannot hold
        raise DeployError(f"{where}: {what} uses a base-256 number; not an edge-sdk package")
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise DeployError(f"{where}: {what} {text!r} is not an octal number; the archive is corrupt") from None


def _text(field: bytes, where: str) -> str:
    try:
        return field.split(b"\x00", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafePathError(f"{where}: an entry name is not valid UTF-8") from None


def _parse_header(block: bytes, where: str) -> tuple[Member | None, int]:
    """Return (member, data size) for one header; refuse everything but ustar files and folders."""
    stored = _octal(block[148:156], "header checksum", where)
    if stored != sum(block[:148]) + 8 * 32 + sum(block[156:]):
        raise DeployError(f"{where}: a tar header fails its checksum; the archive is corrupt or not a tar",
                          hint="copy the package again, or check it was made by `edge-sdk package`")
    magic = block[257:263]
    if magic not in (b"ustar\x00", b"ustar "):
        raise DeployError(f"{where}: not a ustar archive (magic {magic!r})",
                          hint="edge-sdk packages are written by `edge-sdk package`")
    name = _text(block[0:100], where)
    prefix = _text(block[345:500], where) if magic == b"ustar\x00" else ""
    if prefix:
        name = f"{prefix}/{name}"
    kind = block[156:157]
    size = _octal(block[124:136], "size", where)
    mode = _octal(block[100:108], "mode", where)
    shown = name or "(empty name)"
    if kind not in _REGULAR and kind != _DIRECTORY:
        what = _TYPE_NAMES.get(kind, f"an entry of unknown type {kind!r}")
        link = _text(block[157:257], where)
        extra = f" -> {link!r}" if kind in (b"1", b"2") and link else ""
        raise UnsafePathError(f"{where}: entry {shown!r} is {what}{extra}; "
                              "packages hold only regular files and folders",
                              hint="this archive was not made by `edge-sdk package`, or was altered")
    if name.startswith("/"):
        raise UnsafePathError(f"{where}: entry {shown!r} has an absolute path",
                              hint="this archive was not made by `edge-sdk package`, or was altered")
    is_dir = kind == _DIRECTORY
    rel = name[:-1] if is_dir and name.endswith("/") else name
    check_name(rel, where=f"{where}: entry")
    if is_dir and size:
        raise DeployError(f"{where}: folder entry {shown!r} has a size ({size}); the archive is corrupt")
    return Member(rel, is_dir, size, mode & 0o7777), size


def iter_members(f: BinaryIO, *, where: str) -> Iterator[tuple[Member, BinaryIO]]:
    """Yield each (member, stream) in archive order; read the member's data from ``stream``.

    Whatever the caller does not read of a member is skipped. Raises on the first refused entry.
    """
    while True:
        block = _read_exact(f, BLOCK, where)
        if block == b"\x00" * BLOCK:
            return  # end-of-archive marker (a second zero block may follow)
        member, size = _parse_header(block, where)
        reader = _MemberReader(f, size, where)
        yield member, reader  # type: ignore[misc]
        reader.skip_rest()
        pad = (-size) % BLOCK
        if pad:
            _read_exact(f, pad, where)


class _MemberReader(io.RawIOBase):
    """Reads at most the member's size from the archive stream."""

    def __init__(self, f: BinaryIO, size: int, where: str) -> None:
        self._f, self._left, self._where = f, size, where

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if self._left == 0:
            return b""
        n = self._left if n < 0 or n > self._left else n
        data = _read_exact(self._f, n, self._where)
        self._left -= len(data)
        return data

    def skip_rest(self) -> None:
        while self._left:
            self.read(min(self._left, 1 << 20))
