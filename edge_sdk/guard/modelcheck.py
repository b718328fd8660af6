"""Structure checks of model files before a runtime parses them.

Runtimes are native code; a truncated or hostile file can crash them (ORT #4349, TFLite #115308)
instead of raising. These checks are cheap, pure-Python and run first, so the common bad cases
(wrong format, truncation, random bytes, external data pointing outside the model's folder) are a
``ModelFileError``/``UnsafePathError`` naming the file. They do not make a malicious model safe to
run: for that, run in a child process (``edge_sdk.guard.supervise``).

- ONNX: a protobuf wire-format walk of ModelProto (no ``onnx`` package needed on the device):
  every length stays inside its parent, a graph is present, and every external-data
  ``location`` is a relative path to a regular file beside the model with offset+length inside it.
- Every format: ``preflight`` runs the check its descriptor names (``edge_sdk/formats/``), so one
  call covers ONNX, TFLite, OpenVINO IR and any format a plugin adds.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edge_sdk.errors import ModelFileError, UnsafePathError, UsageError
from edge_sdk.guard.paths import resolve_inside

# Deepest nesting of ONNX subgraphs (If/Loop bodies) we follow; real models stay far below.
_MAX_DEPTH = 64
_MAX_ENTRY = 1 << 16  # bytes of one external-data key or value

# Message fields to descend into, per ONNX message type: field number -> message type.
_ONNX_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
    "entry": {},
}


class _Window:
    """Bytes of a file by index and slice, read through a 64 KB window (``os.pread``): what the
    protobuf walk needs of a model file, without mapping or reading its weights."""

    _SIZE = 1 << 16

    def __init__(self, fd: int, size: int) -> None:
        self._fd, self._size = fd, size
        self._lo, self._data = 0, b""

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, key: int | slice) -> int | bytes:
        if isinstance(key, slice):
            return os.pread(self._fd, max(0, key.stop - key.start), key.start)
        if not self._lo <= key < self._lo + len(self._data):
            self._lo, self._data = key, os.pread(self._fd, self._SIZE, key)
            if not self._data:
                raise IndexError(key)
        return self._data[key - self._lo]


def _varint(buf: _Window, pos: int, end: int, where: str) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ModelFileError(f"{where}: truncated or corrupt protobuf (bad varint at byte {pos})",
                                 hint="the file is damaged or not an ONNX model; convert it again")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _walk(buf: _Window, start: int, end: int, kind: str, depth: int, where: str,
          found: list[dict[str, str]], seen: set[str], owner: dict[str, str] | None = None) -> None:
    """Check the framing of one message; collect each tensor's external_data as a dict in ``found``."""
    if depth > _MAX_DEPTH:
        raise ModelFileError(f"{where}: ONNX graphs nested more than {_MAX_DEPTH} deep")
    children = _ONNX_CHILDREN[kind]
    entry: dict[str, str] = {}
    tensor_ext: dict[str, str] = {}
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end, where)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ModelFileError(f"{where}: corrupt protobuf (field number 0 at byte {pos})",
                                 hint="the file is damaged or not an ONNX model; convert it again")
        seen.add(f"{kind}.{field}")
        if wire == 0:
            _, pos = _varint(buf, pos, end, where)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end, where)
            if pos + length > end:
                raise ModelFileError(f"{where}: truncated protobuf (a field of {length} bytes at byte {pos} "
                                     f"runs past its end at {end})",
                                     hint="the file was cut short or is not an ONNX model; convert it again")
            if field in children:
                _walk(buf, pos, pos + length, children[field], depth + 1, where, found, seen,
                      tensor_ext if kind == "tensor" else None)
            elif kind == "entry" and field in (1, 2):
                if length > _MAX_ENTRY:  # a location or offset, never megabytes: read no more than that
                    raise ModelFileError(f"{where}: an external-data entry of {length} bytes at byte {pos}",
                                         hint="the file is damaged or not an ONNX model; convert it again")
                entry["key" if field == 1 else "value"] = bytes(buf[pos:pos + length]).decode("utf-8", "replace")
            pos += length
        else:  # 3/4 are deprecated groups, 6/7 do not exist: not something an exporter writes
            raise ModelFileError(f"{where}: corrupt protobuf (wire type {wire} at byte {pos})",
                                 hint="the file is damaged or not an ONNX model; convert it again")
        if pos > end:
            raise ModelFileError(f"{where}: truncated protobuf (field runs past byte {end})",
                                 hint="the file was cut short; convert it again")
    if kind == "entry" and owner is not None and "key" in entry:
        owner[entry["key"]] = entry.get("value", "")
    if kind == "tensor" and tensor_ext:
        found.append(tensor_ext)


def onnx_external_data(path: str | os.PathLike) -> list[dict[str, str]]:
    """Parse the framing of an .onnx file; return each external tensor's entries (location, offset...).

    Raises ModelFileError if the file is not a well-formed ModelProto with a graph.
    """
    path = Path(path)
    where = f"ONNX model {path}"
    if path.stat().st_size == 0:
        raise ModelFileError(f"{where}: the file is empty", hint="convert the model again")
    entries: list[dict[str, str]] = []
    seen: set[str] = set()
    # Read through a small window, not mmap: a 2 GB single-file model is walked without its weights
    # in memory, and without mapping them either. A mapped page counts in the process's RSS, and the
    # kernel maps the cached pages around each one touched: walking SD 1.5's int8 UNet (826 MB,
    # thousands of tensors) by mmap raised a Pi Zero run's peak by 313 MB while its bundle opened.
    with open(path, "rb") as f:
        buf = _Window(f.fileno(), os.fstat(f.fileno()).st_size)
        _walk(buf, 0, len(buf), "model", 0, where, entries, seen)
    if "model.7" not in seen or "model.1" not in seen:
        raise ModelFileError(f"{where}: not an ONNX model (no ir_version or graph)",
                             hint="check the file is the .onnx the converter wrote")
    return entries


def check_onnx_file(path: str | os.PathLike) -> None:
    """ONNX structure check plus the external-data rules; raises before any runtime reads it."""
    path = Path(path)
    root = path.parent
    where = f"ONNX model {path}"
    for group in onnx_external_data(path):
        loc = group.get("location")
        if loc is None:
            continue
        if loc.startswith("/") or (len(loc) > 1 and loc[1] == ":"):
            raise UnsafePathError(f"{where}: external data location {loc!r} is absolute",
                                  hint="external data must sit beside the model; re-export it")
        full = resolve_inside(root, loc, where=f"{where}: external data")
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            raise ModelFileError(f"{where}: external data file {loc!r} is missing",
                                 hint="copy the whole artifact folder, not only the .onnx") from None
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"{where}: external data {loc!r} is not a regular file")
        try:
            offset = int(group.get("offset", "0") or 0)
            length = int(group["length"]) if group.get("length") else None
        except ValueError:
            raise ModelFileError(f"{where}: external data {loc!r} has a non-numeric offset/length") from None
        if offset < 0 or (length is not None and (length < 0 or offset + length > st.st_size)):
            raise ModelFileError(f"{where}: external data {loc!r} range {offset}+{length} is outside the "
                                 f"{st.st_size}-byte file", hint="the weights file is truncated; convert again")


def preflight(path: str | os.PathLike, format: str | None = None) -> None:
    """Check ``path`` before a runtime opens it with its format's own check (``edge_sdk.formats``).

    The format comes from the suffix, else ``format``; a file of no registered format (e.g. a torch
    reference) is left to its runtime.
    """
    from edge_sdk.formats.registry import format_for_path, get_format

    path = Path(path)
    spec = format_for_path(path)
    if spec is None and format:
        try:
            spec = get_format(format)
        except UsageError:
            spec = None
    if spec is None:
        return
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ModelFileError(f"model file {path} does not exist") from None
    if stat.S_ISDIR(st.st_mode):  # a model folder (e.g. a saved-model dir): its runtime checks it
        return
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(f"model file {path} is not a regular file (a link or a device)",
                              hint="bundles hold regular files only")
    spec.check(path)
