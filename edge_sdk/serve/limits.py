"""Request limits (image sizes, images per request, steps) and their validation.

With a board, the limits come from the planner: the largest size and batch whose plan fits the
board's memory cap, and the server loads exactly that plan, so every request it accepts fits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edge_sdk.bundle import Bundle
from edge_sdk.errors import PlanError, UsageError
from edge_sdk.planning.plan import Plan


@dataclass(frozen=True)
class Limits:
    max_width: int
    max_height: int
    multiple: int  # every side must be a multiple of this many pixels
    max_n: int  # images per request (the pipeline's batch)
    max_steps: int
    default_size: tuple[int, int]  # (width, height) when the request gives none

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def native_size(bundle: Bundle) -> tuple[int, int, int]:
    """(width, height, multiple) in pixels of the model's native output."""
    model = bundle.model
    down = int(model.get("vae_downsample", 8)) if model.get("kind") == "latent_diffusion" else 1
    mult = int(model.get("spatial_multiple", 1)) * down
    native = bundle.native_cells() or model.get("sample_size") or [64, 64]
    if model.get("kind") == "gan":  # one fixed output size: the generator's
        mult = 1
    return int(native[1]) * down, int(native[0]) * down, mult


def limits_for(bundle: Bundle, *, board: str | None = None, max_size: tuple[int, int] | None = None,
               max_n: int = 4, max_steps: int = 50,
               remote: dict[str, str] | None = None) -> tuple[Limits, Plan | None]:
    """The limits to enforce and, with ``board``, the plan to load (the one for the largest request).

    Without a board the caller's ``max_size`` (default: the native size) and ``max_n`` hold. With
    one, the largest (size, n) at or below those whose plan fits the board is used: n shrinks
    first, then the size falls back to the native one.
    """
    w0, h0, mult = native_size(bundle)
    # A sampler cannot take more steps than the schedule has timesteps.
    train = bundle.sampler.get("config", {}).get("num_train_timesteps")
    max_steps = min(max_steps, int(train)) if train else max_steps
    want_w, want_h = max_size or (w0, h0)
    if max_n < 1 or max_steps < 1:
        raise UsageError("--max-batch and --max-steps must be at least 1")
    if want_w % mult or want_h % mult or want_w <= 0 or want_h <= 0:
        raise UsageError(f"--max-size {want_w}x{want_h} does not fit this model", hint=f"use multiples of {mult} px")
    if remote and board is None:
        raise UsageError("--remote needs --board: the planner places components for a board")
    if board is None:
        return Limits(want_w, want_h, mult, max_n, max_steps, (w0, h0)), None
    from edge_sdk.planning.planner import PlanRequest, plan

    sizes = [(want_w, want_h)] + ([(w0, h0)] if (w0, h0) != (want_w, want_h) else [])
    last: PlanError | None = None
    for w, h in sizes:
        for n in range(max_n, 0, -1):
            try:
                p = plan(bundle, board, PlanRequest(height=h, width=w, batch=n, installed_only=True,
                                                         remote=remote))
            except PlanError as e:
                last = e
                continue
            return Limits(w, h, mult, n, max_steps, (min(w0, w), min(h0, h))), p
    assert last is not None
    raise last


def check_request(limits: Limits, *, width: int, height: int, n: int, steps: int | None) -> None:
    """One UsageError naming the field, for any request outside the limits."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limits.max_n:
        raise FieldError("n", f"n must be an integer from 1 to {limits.max_n} on this server, got {n!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                              or not 1 <= steps <= limits.max_steps):
        raise FieldError("steps", f"steps must be an integer from 1 to {limits.max_steps}, got {steps!r}")
    if width > limits.max_width or height > limits.max_height:
        raise FieldError("size", f"size {width}x{height} is larger than this server's limit "
                                 f"{limits.max_width}x{limits.max_height}")
    if width <= 0 or height <= 0 or width % limits.multiple or height % limits.multiple:
        raise FieldError("size", f"size {width}x{height}: each side must be a positive multiple of "
                                 f"{limits.multiple} px")


def request_size(value: Any, limits: Limits) -> tuple[int, int]:
    """'WxH' (OpenAI's form) -> (width, height); None or 'auto' -> the default size."""
    if value is None or value == "auto":
        return limits.default_size
    if isinstance(value, str) and "x" in value:
        w, _, h = value.partition("x")
        if w.isdigit() and h.isdigit():
            return int(w), int(h)
    raise FieldError("size", f"size must be 'WIDTHxHEIGHT' (e.g. '{limits.default_size[0]}x"
                             f"{limits.default_size[1]}'), got {value!r}")


class FieldError(UsageError):
    """A request field out of range: ``param`` names it (the error body's ``param``)."""

    def __init__(self, param: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.param = param
