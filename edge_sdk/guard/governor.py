"""The memory governor: every run is estimated against this machine's available memory before
anything is allocated, with or without a board profile (hardening class 7, docs/hardening.md).

The estimate is a floor, not the planner's full model: the buffers any run of that size must hold
(latents and the sampler's copies of them, both guidance branches, the decoded image in float32 and
uint8). A request whose floor alone exceeds what the machine has free cannot succeed, so it is
refused with MemoryCapError (exit 7) instead of allocating until the OOM killer picks a victim.
"""

from __future__ import annotations

from edge_sdk.errors import EdgeSDKError, MemoryCapError
from edge_sdk.units import MB

LATENT_COPIES = 8  # x, noise, model input, model output, sampler history (multistep keeps several)
IMAGE_BYTES_PER_PIXEL = 32  # float32 decode output, its uint8 copy and the result's raw copy, per RGB pixel
# Never let more than this fraction of available memory go to the floor: the model needs the rest.
AVAILABLE_FRACTION = 0.9


def available_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def floor_bytes(batch: int, channels: int, cells_h: int, cells_w: int, down: int, *, guided: bool) -> int:
    """Bytes any run of this shape must hold at once (see the module doc)."""
    latent = batch * channels * cells_h * cells_w * 4
    branches = 2 if guided else 1
    pixels = batch * (cells_h * down) * (cells_w * down)
    return latent * LATENT_COPIES * branches + pixels * IMAGE_BYTES_PER_PIXEL


def check_run(batch: int, channels: int, cells_h: int, cells_w: int, down: int, *, guided: bool,
              activations: int = 0, available: int | None = None) -> None:
    """Raise MemoryCapError when the run's floor (plus the components' estimated ``activations``)
    exceeds this machine's available memory."""
    need = floor_bytes(batch, channels, cells_h, cells_w, down, guided=guided)
    refuse_beyond(need, activations, f"a batch of {batch} at {cells_w * down}x{cells_h * down} px", available=available,
                  hint="use a smaller --size or --batch (or plan for a board with tiled decoding)")


def gan_floor_bytes(batch: int, z_elems: int, image_elems: int) -> int:
    """A one-shot generator holds z, its float32 output and the uint8 image (plus the result's copy)."""
    return batch * (z_elems * 4 + image_elems * (4 + 1 + 1))


def check_gan(batch: int, z_elems: int, image_elems: int, *, activations: int = 0,
              available: int | None = None) -> None:
    """The governor for GAN/one-shot generators: the batch is the only free dimension."""
    refuse_beyond(gan_floor_bytes(batch, z_elems, image_elems), activations, f"a batch of {batch} images",
                  available=available, hint="use a smaller --batch")


def refuse_beyond(floor: int, activations: int, what: str, *, available: int | None = None, hint: str) -> None:
    """MemoryCapError when ``floor`` (exact buffers) plus ``activations`` (an estimate) exceed the
    usable share of available memory; the message keeps the two apart, since only one is exact."""
    have = available_bytes() if available is None else available
    if floor + activations > have * AVAILABLE_FRACTION:
        raise MemoryCapError(
            f"{what} needs {_size(floor)} for its buffers alone, plus about {_size(activations)} of estimated "
            f"activations; this machine has {_size(have)} available", hint=hint)


def _size(n: int) -> str:
    return f"{n / MB:,.0f} MB" if n < 10 * 1024 * MB else f"{n / (1024 * MB):,.0f} GB"


def activation_estimate(bundle, plan, cells: int, down: int, batch: int) -> int:
    """The largest single component call's activations by the planner's default cost model (no probe)."""
    from edge_sdk.planning.memory_estimate import default_cost

    worst = 0
    for role, cp in plan.components.items():
        if role in ("text_encoder", "encoder"):  # run once per prompt/image, not at the run's size
            continue
        try:
            art = bundle.artifact(role, cp.format, cp.precision, cp.variant)
        except EdgeSDKError:  # a plan/bundle mismatch is reported where the artifact is opened
            continue
        cost = default_cost(bundle, role, cp.runtime, art)
        tiling = getattr(plan, "decode_tiling", None)
        n = tiling.tile * tiling.tile if role == "decoder" and tiling is not None else cells
        worst = max(worst, cost.activation(min(n, cells), down=down, batch=batch))
    return worst
