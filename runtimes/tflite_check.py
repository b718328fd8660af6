"""A bounds check of a .tflite flatbuffer before any native code parses it.

The TFLite interpreter trusts its input: a truncated or random file can read out of bounds and
kill the process (TFLite #115308, #124982). Python's ``flatbuffers`` package has no verifier, so
this walks the parts of the schema the interpreter dereferences first: the root Model table, its
vectors (operator codes, subgraphs, buffers, signature defs), each subgraph's tensor, operator,
input and output vectors, and each buffer's data or (offset, size) span (models over 2 GB keep
weights after the flatbuffer). Every offset must land inside the file. It reads through mmap, so
a multi-GB model costs no copy.

Field ids follow tensorflow/lite/schema/schema.fbs (Model, SubGraph, Buffer tables).
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from edge_sdk.errors import ModelFileError

IDENTIFIER = b"TFL3"
# Model fields
_M_OPCODES, _M_SUBGRAPHS, _M_BUFFERS, _M_SIGNATURES = 1, 2, 4, 7
# SubGraph fields
_S_TENSORS, _S_INPUTS, _S_OUTPUTS, _S_OPERATORS = 0, 1, 2, 3
# Buffer fields
_B_DATA, _B_OFFSET, _B_SIZE = 0, 1, 2
# Far beyond any real model; stops a forged length from making the walk itself slow.
_MAX_ELEMENTS = 50_000_000


class _Bad(Exception):
    pass


class _View:
    def __init__(self, buf) -> None:
        self.buf = buf
        self.size = len(buf)

    def need(self, pos: int, n: int, what: str) -> None:
        if pos < 0 or n < 0 or pos + n > self.size:
            raise _Bad(f"{what} at byte {pos} (+{n}) lies outside the {self.size}-byte file")

    def u32(self, pos: int, what: str) -> int:
        self.need(pos, 4, what)
        return struct.unpack_from("<I", self.buf, pos)[0]

    def i32(self, pos: int, what: str) -> int:
        self.need(pos, 4, what)
        return struct.unpack_from("<i", self.buf, pos)[0]

    def u64(self, pos: int, what: str) -> int:
        self.need(pos, 8, what)
        return struct.unpack_from("<Q", self.buf, pos)[0]

    def table(self, pos: int, what: str) -> dict[int, int]:
        """Field id -> absolute position of the field, for the table at ``pos``."""
        vt = pos - self.i32(pos, f"{what} vtable offset")
        vt_len = self.u32(vt, f"{what} vtable") & 0xFFFF
        self.need(vt, vt_len, f"{what} vtable")
        if vt_len < 4 or vt_len % 2:
            raise _Bad(f"{what} has a malformed vtable (length {vt_len})")
        obj_len = struct.unpack_from("<H", self.buf, vt + 2)[0]
        self.need(pos, obj_len, what)
        fields = {}
        for i in range((vt_len - 4) // 2):
            off = struct.unpack_from("<H", self.buf, vt + 4 + 2 * i)[0]
            if off:
                if off >= obj_len:
                    raise _Bad(f"{what} field {i} points past its table")
                fields[i] = pos + off
        return fields

    def deref(self, field_pos: int, what: str) -> int:
        return field_pos + self.u32(field_pos, what)

    def vector(self, field_pos: int, elem: int, what: str) -> tuple[int, int]:
        """(start of elements, count) of the vector a field points to, bounds-checked."""
        vpos = self.deref(field_pos, what)
        n = self.u32(vpos, f"{what} length")
        if n > _MAX_ELEMENTS:
            raise _Bad(f"{what} claims {n} elements")
        self.need(vpos + 4, n * elem, what)
        return vpos + 4, n

    def tables(self, field_pos: int, what: str):
        start, n = self.vector(field_pos, 4, what)
        for i in range(n):
            yield i, self.table(self.deref(start + 4 * i, f"{what}[{i}]"), f"{what}[{i}]")


def _walk(v: _View) -> None:
    v.need(0, 8, "header")
    if bytes(v.buf[4:8]) != IDENTIFIER:
        raise _Bad(f"file identifier is {bytes(v.buf[4:8])!r}, not {IDENTIFIER!r}")
    model = v.table(v.u32(0, "root offset"), "Model")
    if _M_SUBGRAPHS not in model:
        raise _Bad("Model has no subgraphs")
    if _M_OPCODES in model:
        for _ in v.tables(model[_M_OPCODES], "operator_codes"):
            pass
    for i, sg in v.tables(model[_M_SUBGRAPHS], "subgraphs"):
        n_tensors = sum(1 for _ in v.tables(sg[_S_TENSORS], f"subgraphs[{i}].tensors")) if _S_TENSORS in sg else 0
        for fid, label in ((_S_INPUTS, "inputs"), (_S_OUTPUTS, "outputs")):
            if fid in sg:
                start, n = v.vector(sg[fid], 4, f"subgraphs[{i}].{label}")
                for k in range(n):
                    idx = v.i32(start + 4 * k, label)
                    if not 0 <= idx < n_tensors:
                        raise _Bad(f"subgraphs[{i}].{label}[{k}] names tensor {idx} of {n_tensors}")
        if _S_OPERATORS in sg:
            for _ in v.tables(sg[_S_OPERATORS], f"subgraphs[{i}].operators"):
                pass
    if _M_BUFFERS in model:
        for i, b in v.tables(model[_M_BUFFERS], "buffers"):
            if _B_DATA in b:
                v.vector(b[_B_DATA], 1, f"buffers[{i}].data")
            if _B_OFFSET in b and _B_SIZE in b:
                off, size = v.u64(b[_B_OFFSET], "buffer offset"), v.u64(b[_B_SIZE], "buffer size")
                if off > 1 and off + size > v.size:  # offset 1 is the schema's 'no data' marker
                    raise _Bad(f"buffers[{i}] spans bytes {off}..{off + size} of a {v.size}-byte file")
    if _M_SIGNATURES in model:
        for _ in v.tables(model[_M_SIGNATURES], "signature_defs"):
            pass


def verify_tflite(path: str | Path) -> None:
    """Raise ModelFileError unless ``path`` is a structurally sound TFLite flatbuffer."""
    path = Path(path)
    where = f"TFLite model {path}"
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelFileError(f"{where} does not exist") from None
    if size < 8:
        raise ModelFileError(f"{where} is {size} bytes, too small to be a model", hint="copy or convert it again")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        try:
            _walk(_View(mm))
        except _Bad as e:
            raise ModelFileError(f"{where} is not a valid TFLite flatbuffer: {e}",
                                 hint="the file is corrupt or truncated; copy or convert it again") from None
        except (struct.error, IndexError, ValueError) as e:
            raise ModelFileError(f"{where} is not a valid TFLite flatbuffer: {e}") from None
