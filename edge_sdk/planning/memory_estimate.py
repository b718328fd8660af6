"""Peak-memory cost of each component, per unit of work, for the planner.

A component's cost on a runtime is four numbers:

- ``base``: the process before any model is open (Python, numpy, the runtime's library);
- ``session``: what opening the artifact adds (weights as the runtime holds them, plus its own
  bookkeeping; ~1.0-1.3x the file size), and ``open_extra``, what the open holds for a moment
  above that;
- activations while it runs, ``c0 + max(c1 * units, c2 * cells**2)`` per batch item (``c0``
  once per call where the runtime says a batch holds it once: ``fixed_once``), where
  ``units`` are output pixels for a decoder and latent cells for everything else, and ``cells``
  the latent cells of the input. The quadratic term is self-attention (a [cells x cells] score
  matrix per head). It is a max, not a sum, because the runtime's memory planner reuses buffers:
  the attention phase (a VAE's mid block, at latent resolution) and the full-resolution conv
  phase (its last up block) are not alive at the same time, and the peak is the larger of them.

Where the numbers come from, best first:

1. ``measured``: the component's manifest config holds a ``memory_profile`` recorded at convert
   time, or a probe measured it on this machine (cached by the artifact's sha256): the artifact
   is opened in a child process and run at growing sizes, and the kernel's peak-RSS mark (VmHWM)
   is read after each run; the three coefficients are a least-squares fit. Activation memory is
   a property of the graph and the runtime's allocator, so a probe on the workstation predicts a
   board running the same runtime (within the allocator's rounding).
2. ``default``: when the artifact cannot be opened here (a TFLite-only bundle without LiteRT),
   per-role factors calibrated on Stable Diffusion's VAE decoder (3.9 KB per output pixel, fp32,
   from OnnxStream's 1.004 GB at 512x512: docs/boards.md [src44]) and UNet, scaled by
   sqrt(parameters / SD's parameters) since activations grow with layer width and parameters with
   its square. A rough guide only; the plan says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.units import MB

SESSION_FACTOR = 1.2  # runtime-held bytes per artifact byte, when not measured
SESSION_FIXED = 20 * MB
# Role defaults, calibrated on SD 1.5 (fp32): VAE decoder 3.9 KB per output pixel with 49.5M
# parameters; UNet ~56 KB per latent cell (0.23 GB at 64x64 cells with SDPA) with 859.5M.
_ROLE_DEFAULT = {"decoder": (3900.0, 49.5e6, 1.0), "denoiser": (56_000.0, 859.5e6, 2.0),
                 "encoder": (2000.0, 34.2e6, 1.0), "generator": (2000.0, 10e6, 0.0),
                 "text_encoder": (0.0, 123e6, 0.0)}


@dataclass
class ComponentCost:
    role: str
    runtime: str
    base: int
    session: int
    c0: float
    c1: float  # bytes per unit (output pixel for decoders, latent cell otherwise)
    c2: float  # bytes per cell**2 (attention)
    unit: str  # "out_pixel" or "cell"
    source: str  # "measured", "manifest" or "default"
    samples: list[list[float]] = field(default_factory=list)  # [cells_side, first call, later calls]
    # The same fit for a session that has already run once at that shape (its steady state):
    # ONNX Runtime's arena keeps the first call's buffers and adds the planned memory pattern,
    # between 1x and 2x of the first call depending on how the sizes round. None: 2x is assumed.
    repeated: list[float] | None = None
    # What opening the artifact holds for a moment above its steady session (the engine parsing
    # the file beside the weights it builds): SD 1.5's int8-weight text encoder opens at +404 MB
    # and then holds +295 MB. A stage that opens the component peaks at the larger of this and
    # its activations.
    open_extra: int = 0
    # The runtime's facts (set by ``memory_probe.component_cost``): a batched call holds ``c0`` once,
    # not per item (``batch_holds_fixed_once``); the pipeline frees a session's activations but
    # ``c0`` when it moves on to another component (the runtime implements ``release_scratch``).
    fixed_once: bool = False
    scratch_released: bool = False

    def activation(self, cells: int, *, down: int = 1, batch: int = 1, repeated: bool = False) -> int:
        """Activation bytes of a call on ``batch`` items of ``cells`` latent cells each.

        ``repeated``: what a resident session holds once it has been called more than once.
        """
        units = cells * down * down if self.unit == "out_pixel" else cells
        c0, c1, c2 = (self.repeated if repeated and self.repeated else (self.c0, self.c1, self.c2))
        fixed = c0 if self.fixed_once else 0.0
        act = fixed + batch * (c0 - fixed + max(c1 * units, c2 * cells * cells))
        if repeated and not self.repeated:
            act *= 2.0
        s = self.sample_at(cells)
        if s is not None:  # measured at this very size (one item): never below the measurement
            one = max(s[1], s[-1]) if repeated else s[1]
            act = max(act, one + (batch - 1) * max(0.0, one - fixed))
        return int(act)

    def sample_at(self, cells: int) -> list[float] | None:
        """The probe's sample at ``cells`` latent cells (its side squared), if one was taken."""
        return next((s for s in self.samples if len(s) >= 2 and abs(s[0] * s[0] - cells) < 1.0), None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)






def _base_memory(runtime: str) -> int:
    from edge_sdk.runtimes.base import Runtime
    from edge_sdk.runtimes.registry import get_runtime

    try:
        return get_runtime(runtime).base_memory
    except Exception:  # noqa: BLE001 - an engine we cannot load: the generic adapter's figure
        return Runtime.base_memory


def default_cost(bundle: Bundle, component: str, runtime: str, art) -> ComponentCost:
    per_unit, ref_params, heads = _ROLE_DEFAULT.get(component, (2000.0, 50e6, 0.0))
    config = bundle.component(component).get("config") or {}
    # An alternative network (the "tiny" decoder) has its own parameter count in the config.
    alt = (config.get("variants") or {}).get(getattr(art, "variant", "")) or {}
    params = alt.get("parameters") or bundle.component(component).get("parameters") or ref_params
    scale = math.sqrt(max(params, 1) / ref_params)
    # Attention in N query chunks ("sliced:N") holds 1/N of the score matrix at a time.
    chunks = str(alt.get("attention", "")).partition("sliced:")[2]
    heads = heads / int(chunks) if chunks.isdigit() and int(chunks) > 0 else heads
    return ComponentCost(role=component, runtime=runtime, base=_base_memory(runtime),
                         session=int(art.size * SESSION_FACTOR + SESSION_FIXED), c0=0.0, c1=per_unit * scale,
                         c2=4.0 * heads if alt.get("attention", True) else 0.0,
                         unit="out_pixel" if component == "decoder" else "cell", source="default")
















def fit_activation(samples: list[list[float]], *, down: int = 1, c2_floor: float = 0.0,
                   quadratic: bool = True) -> tuple[float, float, float]:
    """Fit act = c0 + max(c1*units, c2*cells^2) to probe samples (relative error, grid search).

    ``c2_floor`` is a lower bound for the attention term: a probe that stays at small sizes only
    sees the conv phase, so a decoder with attention gets at least one fp32 score matrix.
    ``quadratic`` False: no attention term (an engine that fuses attention holds no score matrix;
    three samples that a linear term fits as well would otherwise let a quadratic one win the tie
    and dominate at larger sizes: OpenVINO's sliced VAE decoder fitted 133 B/cell^2, 2.2 GB at
    64x64 cells, where it measured 1.0 GB).
    """
    big = [s for s in samples if s[1] >= 4 * MB]  # below a few MB the allocator's slack is all one sees
    samples = big if len(big) >= 2 else samples
    if not samples:
        return 0.0, 0.0, c2_floor
    n = np.array([s[0] for s in samples], dtype=np.float64)
    y = np.array([s[1] for s in samples], dtype=np.float64)
    units, quad = n * n * down * down, (n * n) ** 2
    c1s = np.concatenate([[0.0], np.geomspace(1.0, 1e6, 241)])
    c2s = np.concatenate([[0.0], np.geomspace(0.01, 1e3, 201)]) if quadratic else np.zeros(1)
    c2s = c2s[c2s >= c2_floor] if c2_floor > 0 else c2s
    if c2_floor > 0:
        c2s = np.concatenate([[c2_floor], c2s])
    phase = np.maximum(c1s[:, None, None] * units[None, None, :], c2s[None, :, None] * quad[None, None, :])
    # c0 for each (c1, c2): the mean remainder, never negative.
    c0 = np.clip((y[None, None, :] - phase).mean(axis=2), 0.0, None)
    err = (((c0[:, :, None] + phase) - y[None, None, :]) / y[None, None, :]) ** 2
    # Underestimates are worse than overestimates for a cap: weigh them 4x.
    under = (c0[:, :, None] + phase) < y[None, None, :]
    score = (err * np.where(under, 4.0, 1.0)).sum(axis=2)
    i, j = np.unravel_index(int(np.argmin(score)), score.shape)
    return float(c0[i, j]), float(c1s[i]), float(c2s[j])


def has_attention(path: Path) -> bool | None:
    """Whether a model file holds a softmax (attention), from its bytes; None when the format hides it."""
    suffix = path.suffix.lower()
    if suffix not in (".onnx", ".xml"):
        return None  # TFLite stores operator codes, not names
    needle = (b"Softmax", b"SoftMax")
    tail = b""
    # Op types sit in the graph, before large initializers in most files: the first 64 MB, read a
    # megabyte at a time (a plan on a 512 MB board asks this of the decoder it will run).
    with open(path, "rb") as f:
        for _ in range(64):
            chunk = f.read(MB)
            if not chunk:
                return False
            window = tail + chunk
            if any(x in window for x in needle):
                return True
            tail = window[-(len(needle[0]) - 1):]
    return False
