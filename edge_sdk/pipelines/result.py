"""What a generation returns: uint8 HWC images plus timings, and PNG writing."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.errors import UsageError


def to_uint8(images: np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """NCHW floats in ``value_range`` -> NHWC uint8 (rounded, clipped)."""
    lo, hi = value_range
    x = (images.astype(np.float32) - lo) / (hi - lo)
    x = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def grid(images: np.ndarray, cols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile NHWC uint8 images into one HWC image."""
    n, h, w, c = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        out[y:y + h, x:x + w] = img
    return out


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an HWC uint8 image (RGB, or gray) as PNG through a temporary name."""
    import cv2

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UsageError(f"output {path} must end in .png")
    if not path.parent.exists():
        raise UsageError(f"output folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise UsageError(f"output folder {path.parent} is not writable", hint="choose another --out")
    img = image if image.shape[-1] == 1 else image[..., ::-1]  # RGB -> BGR for OpenCV
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img))
    if not ok:
        raise UsageError(f"could not encode {path} as PNG")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(buf.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # read-only or virtual file systems pass os.access for root (hardening)
        raise UsageError(f"cannot write {path}: {e.strerror}", hint="choose another --out on a writable disk") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


@dataclass
class GenerationResult:
    images: np.ndarray  # NHWC uint8
    raw: np.ndarray  # NCHW float32, the decoder's (or final sample's) output
    latents: np.ndarray | None
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    info: dict[str, Any] = field(default_factory=dict)

    def grid(self, cols: int | None = None) -> np.ndarray:
        return grid(self.images, cols)

    def save(self, path: str | os.PathLike, cols: int | None = None) -> Path:
        """One image as is; several as a grid."""
        return write_png(path, self.images[0] if len(self.images) == 1 else self.grid(cols))
