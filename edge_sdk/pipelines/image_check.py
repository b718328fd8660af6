"""Input images checked before decoding (hardening classes 7 and 8, docs/hardening.md).

The file is read once (no link, regular file, size cap), its header names the format and the
pixel size, which is refused above ``MAX_PIXELS`` before any decoder allocates (decompression
bomb); its structure is walked to the end, so a truncated PNG (no IEND, bad chunk CRC) or JPEG
(no EOI after the scan data) is refused rather than half-decoded (OpenCV only warns). The same
bytes are then decoded, so what was checked is what is used.
"""

from __future__ import annotations

import struct
import zlib

from edge_sdk.errors import UsageError

MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_PIXELS = 64 * 1024 * 1024  # 64 MP: far above any init image a board can use, far below a bomb
_PNG = b"\x89PNG\r\n\x1a\n"


def _bad(where: str, why: str) -> UsageError:
    return UsageError(f"init image {where}: {why}", hint="give a complete PNG, JPEG, BMP or WebP file")


def _png(data: bytes, where: str) -> tuple[int, int]:
    pos, size, dims, ended = 8, len(data), None, False
    while pos < size:
        if pos + 12 > size:
            raise _bad(where, "truncated PNG (a chunk header is cut off)")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > size:
            raise _bad(where, f"truncated PNG (chunk {ctype!r} runs past the end of the file)")
        crc = struct.unpack(">I", data[end - 4:end])[0]
        if zlib.crc32(data[pos + 4:end - 4]) != crc:
            raise _bad(where, f"corrupt PNG (chunk {ctype!r} fails its CRC)")
        if ctype == b"IHDR":
            if length < 8:
                raise _bad(where, "corrupt PNG (short IHDR)")
            dims = struct.unpack(">II", data[pos + 8:pos + 16])
        if ctype == b"IEND":
            ended = True
            break
        pos = end
    if dims is None:
        raise _bad(where, "corrupt PNG (no IHDR)")
    if not ended:
        raise _bad(where, "truncated PNG (no IEND chunk)")
    return dims[1], dims[0]


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: bytes, where: str) -> tuple[int, int]:
    """Walk the marker segments; after each scan (SOS) skip the entropy-coded data to the next marker.
    A file that ends before EOI is truncated."""
    pos, size, dims = 2, len(data), None
    while True:
        if pos + 2 > size:
            raise _bad(where, "truncated JPEG (no end-of-image marker)")
        if data[pos] != 0xFF:
            raise _bad(where, f"corrupt JPEG (no marker at byte {pos})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM / RSTn: no length
            pos += 2
            continue
        if pos + 4 > size:
            raise _bad(where, "truncated JPEG (a segment header is cut off)")
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if length < 2 or pos + 2 + length > size:
            raise _bad(where, "truncated JPEG (a segment runs past the end of the file)")
        if marker in _SOF:
            if length < 7:
                raise _bad(where, "corrupt JPEG (short frame header)")
            h, w = struct.unpack(">HH", data[pos + 5:pos + 9])
            dims = (h, w)
        pos += 2 + length
        if marker == 0xDA:  # SOS: entropy-coded data until a marker that is not 00 / RSTn
            while True:
                nxt = data.find(b"\xff", pos)
                if nxt < 0 or nxt + 1 >= size:
                    raise _bad(where, "truncated JPEG (the scan data is cut off before the end-of-image marker)")
                b = data[nxt + 1]
                if b == 0x00 or 0xD0 <= b <= 0xD7 or b == 0xFF:
                    pos = nxt + (1 if b == 0xFF else 2)
                    continue
                pos = nxt
                break
    if dims is None:
        raise _bad(where, "corrupt JPEG (no frame header)")
    return dims


def _bmp(data: bytes, where: str) -> tuple[int, int]:
    if len(data) < 26:
        raise _bad(where, "truncated BMP header")
    declared, offset = struct.unpack("<I4xI", data[2:14])
    w, h = struct.unpack("<ii", data[18:26])
    if declared > len(data):
        raise _bad(where, f"truncated BMP (header says {declared} bytes, the file has {len(data)})")
    if len(data) >= 34:
        bpp, compression = struct.unpack("<HI", data[28:34])
        stride = (abs(w) * bpp + 31) // 32 * 4
        if compression == 0 and offset + stride * abs(h) > len(data):
            raise _bad(where, "truncated BMP (the pixel rows run past the end of the file)")
    return abs(h), abs(w)


def _webp(data: bytes, where: str) -> tuple[int, int]:
    if len(data) < 30:
        raise _bad(where, "truncated WebP header")
    riff = struct.unpack("<I", data[4:8])[0]
    if riff + 8 > len(data):
        raise _bad(where, f"truncated WebP (RIFF says {riff + 8} bytes, the file has {len(data)})")
    kind = data[12:16]
    if kind == b"VP8X":
        w = 1 + int.from_bytes(data[24:27], "little")
        h = 1 + int.from_bytes(data[27:30], "little")
    elif kind == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        w, h = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    elif kind == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        w, h = w & 0x3FFF, h & 0x3FFF
    else:
        raise _bad(where, f"unknown WebP chunk {kind!r}")
    return h, w


def image_size(data: bytes, where: str) -> tuple[int, int]:
    """(height, width) from the header of a complete PNG/JPEG/BMP/WebP; UsageError otherwise."""
    if data.startswith(_PNG):
        h, w = _png(data, where)
    elif data.startswith(b"\xff\xd8"):
        h, w = _jpeg(data, where)
    elif data.startswith(b"BM"):
        h, w = _bmp(data, where)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        h, w = _webp(data, where)
    else:
        raise _bad(where, "not a PNG, JPEG, BMP or WebP file")
    if h < 1 or w < 1:
        raise _bad(where, f"empty image ({w}x{h})")
    if h * w > MAX_PIXELS:
        raise UsageError(f"init image {where} is {w}x{h} pixels, over the {MAX_PIXELS // (1024 * 1024)} MP limit",
                         hint="scale it down first; the model uses it at the output size anyway")
    return h, w


def read_checked(path: str) -> bytes:
    """The bytes of image file ``path`` after the checks above (decode these, not the path)."""
    from edge_sdk.guard.safeio import read_regular

    data = read_regular(path, max_bytes=MAX_FILE_BYTES, error=UsageError, what="init image")
    image_size(data, path)
    return data
