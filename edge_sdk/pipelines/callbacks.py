"""Per-step callbacks: progress, a cheap preview of the current estimate, and cancelling.

The callback gets a ``StepInfo`` after every sampler step; returning ``False`` (or raising
``CancelledError``) stops the run with ``CancelledError``, whose ``step`` says how many steps ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edge_sdk.errors import CancelledError
from edge_sdk.pipelines.result import grid, to_uint8

# (estimate NCHW, decode?) -> NHWC uint8; supplied by the pipeline that knows the model's space.
Previewer = Callable[[np.ndarray, bool], np.ndarray]


@dataclass
class StepInfo:
    """What a per-step callback sees. Return False from the callback to cancel the run."""

    index: int  # 0-based among the steps this run makes (img2img runs fewer than ``steps``)
    total: int
    timestep: float
    sample: np.ndarray  # the sampler's current x_t (NCHW float32)
    denoised: np.ndarray | None  # the sampler's current x_0 estimate, when it has one
    _previewer: Previewer | None = field(default=None, repr=False)

    @property
    def progress(self) -> float:
        return (self.index + 1) / self.total

    def preview(self, decode: bool = False) -> np.ndarray:
        """The current x_0 estimate as one HWC uint8 image (a grid for a batch).

        Cheap by default: latents are shown as their first three channels, min-max scaled and
        enlarged to the output size; ``decode=True`` runs the decoder on them instead (exact, and
        as costly as the final decode).
        """
        x = self.denoised if self.denoised is not None else self.sample
        images = self._previewer(x, decode) if self._previewer is not None else minmax_uint8(x)
        return images[0] if len(images) == 1 else grid(images)


StepCallback = Callable[[StepInfo], "bool | None"]


def minmax_uint8(x: np.ndarray, upscale: int = 1) -> np.ndarray:
    """NCHW floats of any range -> NHWC uint8 via their first 3 channels (gray if fewer), min-max scaled."""
    x = x[:, :3] if x.shape[1] >= 3 else np.repeat(x[:, :1], 3, axis=1)
    lo, hi = float(x.min()), float(x.max())
    img = to_uint8(x, (lo, hi if hi > lo else lo + 1.0))
    if upscale > 1:  # nearest: costs a copy, keeps the preview the size of the final image
        img = img.repeat(upscale, axis=1).repeat(upscale, axis=2)
    return img


def notify(callback: StepCallback | None, info: StepInfo) -> None:
    """Call ``callback``; a False return becomes CancelledError carrying the step count."""
    if callback is None:
        return
    try:
        keep_going = callback(info)
    except CancelledError as e:
        if getattr(e, "step", None) is None:
            e.step = info.index + 1
        raise
    if keep_going is False:
        err = CancelledError(f"generation cancelled by the callback after step {info.index + 1}/{info.total}")
        err.step = info.index + 1
        raise err
