"""Hardening round two, classes 7 and 8 for images: ``--init-image`` bombs and truncated files
(issue 14). Each hostile image is built here; the header check must refuse it before a decoder
allocates, and a truncated PNG/JPEG/BMP/WebP is refused rather than half-decoded.
"""

from __future__ import annotations

import struct
import time
import zlib

import cv2
import numpy as np
import pytest

import edge_sdk
from edge_sdk.errors import UsageError
from edge_sdk.pipelines.image_check import MAX_PIXELS, image_size
from edge_sdk.pipelines.img2img import read_image

IMG = (np.random.default_rng(0).random((37, 53, 3)) * 255).astype(np.uint8)


def _encoded(ext: str, params=()) -> bytes:
    ok, buf = cv2.imencode(ext, IMG, list(params))
    assert ok
    return buf.tobytes()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(w: int = 200_000, h: int = 200_000) -> bytes:
    """A valid-looking PNG whose header claims w x h pixels, with 1 KB of compressed zeros."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 100_000, 9))
            + _chunk(b"IEND", b""))


def jpeg_bomb() -> bytes:
    """A real JPEG whose frame header is edited to 65535 x 65535."""
    data = bytearray(_encoded(".jpg"))
    i = data.find(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", 65535, 65535)
    return bytes(data)


FORMATS = {"png": (".png", ()), "jpeg": (".jpg", ()), "jpeg-progressive": (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
           "bmp": (".bmp", ()), "webp": (".webp", ())}


def _bad_cases() -> dict[str, tuple[bytes, str]]:
    cases = {"png-bomb": (png_bomb(), "MP limit"), "jpeg-bomb": (jpeg_bomb(), "MP limit"),
             "empty": (b"", "not a PNG"), "random": (bytes(range(256)) * 4, "not a PNG"),
             "gif": (b"GIF89a" + b"\0" * 100, "not a PNG")}
    for name, (ext, params) in FORMATS.items():
        data = _encoded(ext, params)
        cases[f"{name}-cut-1"] = (data[:-1], "truncated" if name != "webp" else "truncated")
        cases[f"{name}-cut-half"] = (data[: len(data) // 2], "truncated")
    png = _encoded(".png")
    cases["png-bad-crc"] = (png[:40] + bytes([png[40] ^ 1]) + png[41:], "CRC")
    return cases


BAD = _bad_cases()


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_init_image_api(name, tmp_path):
    data, frag = BAD[name]
    p = tmp_path / "init.img"
    p.write_bytes(data)
    t = time.perf_counter()
    with pytest.raises(UsageError) as e:
        read_image(p)
    assert type(e.value) is UsageError and frag in str(e.value), e.value
    assert time.perf_counter() - t < 5  # refused from the header: no decode of 40 G pixels


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_complete_images_still_decode(name, tmp_path):
    ext, params = FORMATS[name]
    p = tmp_path / f"ok{ext}"
    p.write_bytes(_encoded(ext, params))
    arr = read_image(p)
    assert arr.shape == (37, 53, 3)
    if name in ("png", "bmp"):  # lossless: exactly the pixels written (RGB vs OpenCV's BGR)
        assert np.array_equal(arr, IMG[:, :, ::-1])
    assert image_size(p.read_bytes(), "x") == (37, 53)
    assert 37 * 53 < MAX_PIXELS


@pytest.mark.slow
@pytest.mark.parametrize("name", ["png-bomb", "jpeg-cut-half"])
def test_bad_init_image_cli_and_generate(name, tiny_bundle, tmp_path, cli):
    data, frag = BAD[name]
    p = tmp_path / "init.img"
    p.write_bytes(data)
    proc = cli("run", str(tiny_bundle), "--steps", "1", "--init-image", str(p), "--out", str(tmp_path / "o.png"))
    assert proc.returncode == UsageError.exit_code and frag in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "o.png").exists()
    with edge_sdk.load(tiny_bundle) as gen, pytest.raises(UsageError, match=frag):
        gen.generate(steps=1, init_image=p, strength=0.5)


def test_init_image_not_a_regular_file(tmp_path):
    import os

    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="not a regular file"):
        read_image(fifo)  # a FIFO must not hang the reader
    link = tmp_path / "link.png"
    link.symlink_to("/dev/zero")
    with pytest.raises(UsageError, match="symbolic link"):
        read_image(link)

