"""The expected slowdown of a memory-saving rung against the fastest plan: recorded factors, multiplied.

Each choice the ladder can add has one factor, measured by a benchmark on this project's machine
(2 shared x86 cores; ``benchmarks/RESULTS.md``), and is an estimate on another board: the ratio of
one choice's whole-run time to the same run without it. Choices are assumed independent (their
factors multiply), which the benchmarks have not checked beyond the pairs they ran together.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Factor:
    factor: float
    source: str  # where the figure was measured


FACTORS: dict[str, Factor] = {
    # 4.34 s vs 3.63 s, 2 steps + decode (benchmarks/results/low_memory.json).
    "sliced attention": Factor(1.2, "low_memory.py: SD-shaped model, 512x512, sliced:16 vs full, ONNX Runtime"),
    # 4.85 s vs 4.34 s (same file).
    "int8-weight": Factor(1.12, "low_memory.py: SD-shaped model, 512x512, int8-weight vs fp32 (both sliced)"),
    # 70.5 s vs 44.0 s, streamed with sequential CFG vs resident batched (results/streaming_scale0.25.json).
    "streamed": Factor(1.6, "streaming.py: SD 1.5 layout at 1/4 width, 512x512, 11 parts + sequential CFG"),
    # 263.0 s vs 119.8 s = 2.20x (results/full_size_boards.json: 46 int8-weight sliced:32 parts, sequential
    # CFG, against the resident fp32 full-attention plan), less the sliced and int8-weight factors above.
    "streamed per layer": Factor(1.64, "full_size_boards.py: SD 1.5, 512x512, 46 layer parts + sequential CFG "
                                       "(2.20x whole run / 1.2 sliced / 1.12 int8-weight)"),
}
# Choices no benchmark has timed yet: reported as unknown (factor 1.0 in the product, named in the note).
UNMEASURED = ("per-stage loading", "per-call loading", "sequential CFG", "tiled decode", "tiny decoder")


def expected(choices: list[str]) -> tuple[float, list[str], list[str]]:
    """(product of the known factors, the choices whose factor is known, those not measured)."""
    total, known, unknown = 1.0, [], []
    for c in choices:
        f = FACTORS.get(c)
        if f is None:
            unknown.append(c)
        else:
            total *= f.factor
            known.append(f"{c} {f.factor:g}x")
    return total, known, unknown
