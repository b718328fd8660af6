"""img2img: the init image, read with OpenCV, resized if asked, scaled to the model's value range
and (for latent models) encoded by the bundle's VAE encoder into scaled latents.

The sampler then starts from ``add_noise(x0, noise, start)`` at the loop index that ``strength``
gives (``Sampler.set_timesteps_img2img``): strength 1 ignores the image, small values keep it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.errors import BundleError, UsageError
from edge_sdk.pipelines.sessions import Sessions

ImageLike = str | os.PathLike | np.ndarray


def read_image(image: ImageLike, channels: int = 3) -> np.ndarray:
    """An HWC uint8 image (RGB, or 1-channel gray) from a file path or an array."""
    import cv2

    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.dtype != np.uint8:
            raise UsageError(f"init image array must be HxWxC uint8 with C in 1, 3, 4; got {arr.shape} {arr.dtype}")
        arr = arr[:, :, :3]
    else:
        from edge_sdk.pipelines.image_check import read_checked

        path = os.fspath(image)
        if not os.path.lexists(path):
            raise UsageError(f"init image {path} does not exist")
        data = read_checked(path)  # header, size and completeness checked before any decoding
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
        if arr is None:
            raise UsageError(f"init image {path} cannot be decoded", hint="give a PNG, JPEG, BMP or WebP file")
        arr = arr[:, :, None] if arr.ndim == 2 else arr[:, :, ::-1]  # OpenCV reads BGR
    if arr.shape[2] == 1 and channels == 3:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 3 and channels == 1:
        arr = np.rint(arr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)[..., None]
    if min(arr.shape[:2]) < 1:
        raise UsageError(f"init image is empty ({arr.shape})")
    return np.ascontiguousarray(arr)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize HWC uint8 to (height, width): area averaging when shrinking, bicubic when enlarging."""
    import cv2

    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    interp = cv2.INTER_AREA if height * width < h * w else cv2.INTER_CUBIC
    out = cv2.resize(image, (width, height), interpolation=interp)
    return out[:, :, None] if out.ndim == 2 else out


def to_model_range(image: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """HWC uint8 -> 1CHW float32 in ``value_range`` (the inverse of ``result.to_uint8``)."""
    lo, hi = value_range
    x = image.astype(np.float32).transpose(2, 0, 1)[None] / np.float32(255.0)
    return (np.float32(lo) + np.float32(hi - lo) * x).astype(np.float32)


def encode_latents(bundle: Bundle, sessions: Sessions, pixels: np.ndarray) -> np.ndarray:
    """VAE encoder mean -> the denoiser's latent scale: ``(mean - shift) * scale``."""
    if "encoder" not in bundle.components:
        raise UsageError(f"bundle {bundle.name} has no VAE encoder, so it cannot do img2img",
                         hint="convert the model with its encoder component")
    model: dict[str, Any] = bundle.model
    name = bundle.signature("encoder")[0][0].name
    mean = sessions.run("encoder", {name: pixels})
    channels = bundle.signature("denoiser")[0][0].shape[1]
    if isinstance(channels, int) and mean.shape[1] != channels:
        raise BundleError(f"bundle {bundle.name}: the encoder gives {mean.shape[1]} channels, the denoiser takes "
                          f"{channels}", hint="export the encoder's latent mean (not the moments)")
    scale = float(model.get("latent_scale_factor", 1.0))
    shift = float(model.get("latent_shift_factor", 0.0))
    return ((mean - np.float32(shift)) * np.float32(scale)).astype(np.float32)
