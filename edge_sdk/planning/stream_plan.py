"""What streaming a component costs, from its stream parts in the manifest (the planner's last rung).

A streamed denoiser call holds, besides the process: one part's session (the largest part bounds
it), that part's activations (bounded by the whole component's, which the memory model already
knows), and the tensors carried between parts (skip connections, time embedding, text states),
sized here from the parts' tensor specs at the requested resolution. A part's session is
estimated as the whole component's session scaled by the part's share of the artifact bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_sdk.bundle import Artifact, Bundle, StreamPart
from edge_sdk.manifest import TensorSpec
from edge_sdk.planning.memory_estimate import ComponentCost
from edge_sdk.planning.plan import ComponentPlan
from edge_sdk.units import MB

# A streamed call against a resident one, measured on the streaming test UNet (9.6M parameters,
# ONNX Runtime fp32, 2 shared cores, batch 2): 2.0x at 64x64 latents (512x512 images), 6.8x at
# 16x16, where re-opening the parts dominates a short call. Reported in the plan's note as the
# expected slowdown; benchmarks/streaming.py measures whole runs.
EXPECTED_SLOWDOWN = 2.0
# int8-weight parts where a streamed call cannot be measured here (``memory_probe.streamed_call_peak``):
# a part's peak while it runs, over its artifact bytes. ONNX Runtime holds the int8 weights (1.0x
# the file) and dequantizes a weight to fp32 for its op (4x, transient). SD 1.5's 46 layer parts
# with whole weights, at 512x512 without the CPU arena: the worst, up1-res0 (47 MB), 189 MB above
# the RSS before it opened (4.02x); 4.1 covers it. Parts whose large weights are sliced
# (converters/quantize_onnx.py) peak lower, and their attention parts' activations higher than
# any factor of their bytes says.
INT8_PART_RUN_FACTOR = 4.1
# Parts a streamed session keeps open (the plan's stream budget) hold their sessions through the
# denoise and every later stage: 84 MB held for 61 MB of SD 1.5's first int8 layer parts (small
# parts carry the engine's fixed per-session bytes), measured in the Zero's streamed run.
KEPT_SESSION_FACTOR = 1.4


def kept_parts(parts: list[StreamPart], budget: int) -> list[StreamPart]:
    """The parts a streamed session keeps open within ``budget`` artifact bytes: the first ones
    that fit together (the run's choice and the plan's count, from this one rule)."""
    kept, used = [], 0
    for p in parts:
        if used + p.artifact.size > budget:
            break
        used += p.artifact.size
        kept.append(p)
    return kept


def _dim(d: int | str, h: int, w: int, batch: int) -> int:
    """A named axis at the request: batch, height/width (latent cells) or height_N = height / N."""
    if isinstance(d, int):
        return d
    if d == "batch":
        return batch
    for name, size in (("height", h), ("width", w)):
        if d == name:
            return size
        if d.startswith(name + "_") and d[len(name) + 1:].isdigit():
            return max(1, size // int(d[len(name) + 1:]))
    return 1  # another named axis (a text length is fixed in these graphs)


def tensor_bytes(t: TensorSpec, h: int, w: int, batch: int) -> int:
    try:
        item = np.dtype(t.dtype).itemsize
    except TypeError:
        item = 4
    return int(np.prod([_dim(d, h, w, batch) for d in t.shape], dtype=np.int64)) * item


@dataclass
class StreamCost:
    parts: list[StreamPart]
    session: int  # bytes: the largest part's session
    ratio: float  # session bytes per artifact byte (the whole component's, applied to each part)
    part_peak: int | None = None  # factor peak of the largest part (session + its call), int8-weight
    # Measures a streamed call of ``batch`` rows at ``measured_at`` (latent cells: the plan's size;
    # memory_probe.streamed_call_peak: its peak, with the tensors carried between parts, and what
    # each part holds once run); it returns None where that cannot be measured here.
    measure: Callable[[int], dict[str, Any] | None] | None = None
    measured_at: tuple[int, int] = (0, 0)
    _measured: dict[int, dict[str, Any] | None] = field(default_factory=dict, init=False, repr=False)

    def _measurement(self, batch: int) -> dict[str, Any] | None:
        if self.measure is not None and batch not in self._measured:
            self._measured[batch] = self.measure(batch)
        return self._measured.get(batch)

    def call_peak(self, h: int, w: int, batch: int) -> int | None:
        """What one streamed call holds above the process at its peak, at ``batch`` rows: measured
        at that batch where it can be (a part's weights are not held per row: OpenVINO's streamed
        Pi 4 plan of SD 1.5 with batched CFG, twice its batch-1 call, was estimated 54 % high), else
        the int8 factor's part plus the carried tensors; None for float parts not measured (the
        whole component's activations apply). The measurement at the plan's size also bounds
        smaller sizes (a refusal's search for a size that fits), where activations are smaller."""
        if self.measure is not None and h * w <= self.measured_at[0] * self.measured_at[1]:
            measured = self._measurement(batch)
            if measured is not None:
                return measured["peak"]
        if self.part_peak is None:
            return None
        return self.part_peak * batch + self.held_bytes(h, w, batch)

    def held_bytes(self, h: int, w: int, batch: int) -> int:
        """The most bytes of carried tensors alive during any part (its inputs and outputs included)."""
        last: dict[str, int] = {}
        for p in self.parts:
            for t in p.inputs:
                last[t.name] = p.index
        alive: dict[str, int] = {t.name: tensor_bytes(t, h, w, batch) for t in self.parts[0].inputs}
        peak = 0
        for p in self.parts:
            out = {t.name: tensor_bytes(t, h, w, batch) for t in p.outputs}
            peak = max(peak, sum(alive.values()) + sum(out.values()))
            for t in p.inputs:
                if last.get(t.name) == p.index:
                    alive.pop(t.name, None)
            alive.update(out)
        return peak

    def _held(self, batch: int) -> list[int] | None:
        """What each part holds once run at ``batch`` rows, as measured (None: not measured here)."""
        measured = self._measurement(batch)
        held = measured.get("held") if measured else None
        return held if held and len(held) == len(self.parts) else None

    def budget(self, peak: int, cap: float, batch: int = 1) -> int:
        """Artifact bytes of parts that may stay resident: half the cap's room above the plan's peak
        (the plan then counts what they hold, ``kept_bytes``, in the denoise and decode stages)."""
        room = max(0.0, cap - peak) / 2
        held = self._held(batch)
        if not held:  # what a part holds, from the whole component's session per artifact byte
            return int(room / self.ratio) if self.ratio > 0 else 0
        used = 0
        for i, part_held in enumerate(held):  # the first parts whose measured holding fits the room
            if used + part_held > room:
                return sum(p.artifact.size for p in self.parts[:i])
            used += part_held
        return sum(p.artifact.size for p in self.parts)

    def kept_bytes(self, budget: int, batch: int = 1) -> int:
        """What the parts a streamed session keeps open within ``budget`` artifact bytes hold, run at
        ``batch`` rows: as measured, else ``KEPT_SESSION_FACTOR`` of their bytes."""
        kept = kept_parts(self.parts, budget)
        held = self._held(batch)
        if held:
            return sum(held[: len(kept)])
        return int(sum(p.artifact.size for p in kept) * KEPT_SESSION_FACTOR)

    def note(self, peak: int, cap: float, batch: int = 1) -> str:
        largest = max(self.parts, key=lambda p: p.artifact.size)
        kept = self.budget(peak, cap, batch)
        return (f"the denoiser is streamed: {len(self.parts)} parts opened, run and released in turn each call "
                f"(largest {largest.name}, {largest.artifact.size / MB:.0f} MB; "
                f"{kept / MB:.0f} MB of parts kept open), about {EXPECTED_SLOWDOWN:.0f}x the time of a resident "
                "denoiser: the slowest rung, taken because nothing else fits the cap")


def stream_cost(bundle: Bundle, role: str, cp: ComponentPlan, artifact: Artifact, cost: ComponentCost,
                measure: Callable[..., dict[str, Any] | None] | None = None,
                measured_at: tuple[int, int] = (0, 0)) -> StreamCost | None:
    """The stream cost of ``role`` in the chosen format/precision, or None when it has no such parts.

    Parts converted with sliced attention (manifest ``stream.attention``) go with the ``sliced``
    variant's choice, whose measured activations are theirs; plain parts with the plain artifact."""
    sliced = bool(bundle.component(role).get("stream", {}).get("attention"))
    if cp.variant != ("sliced" if sliced else ""):
        return None
    parts = bundle.stream_parts(role, cp.format, cp.precision)
    if not parts:
        return None
    ratio = cost.session / max(artifact.size, 1)
    largest = max(p.artifact.size for p in parts)
    peak = int(largest * INT8_PART_RUN_FACTOR) if cp.precision == "int8-weight" else None
    return StreamCost(parts, int(largest * ratio), ratio, peak,
                      measure=(lambda batch: measure(parts, batch=batch)) if measure is not None else None,
                      measured_at=measured_at)
