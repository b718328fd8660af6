"""The pipelines' seed rule: row ``k`` of a batch seeded ``s`` is the image that seed ``s + k`` gives alone.

Each row owns one generator, ``make_generator(s + k)`` (PCG64, see ``edge_sdk.samplers.noise``).
Its first draw is the row's starting noise (the img2img noise, or a GAN's z); a stochastic
sampler's per-step noise is drawn from the same generator afterwards, one row-shaped draw per step.
So a single image from seed ``s`` starts from exactly ``randn(s, shape)``, and any image of a batch
can be regenerated on its own, on any backend, with any stochastic sampler, from seed ``s + k``.
(A plain ``randn(s, (B, ...))`` would tie every row to the batch size and order.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_sdk.errors import UsageError
from edge_sdk.samplers import make_generator


class RowNoise:
    """One seeded generator per batch row; ``draw`` returns a (batch, *row_shape) float32 array."""

    def __init__(self, seed: int, batch: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise UsageError(f"seed must be a non-negative integer, got {seed!r}", hint="pass e.g. seed=42")
        if batch < 1:
            raise UsageError(f"batch must be at least 1, got {batch}")
        self.seed = int(seed)
        self.generators = [make_generator(self.seed + k) for k in range(batch)]

    @property
    def seeds(self) -> list[int]:
        return [self.seed + k for k in range(len(self.generators))]

    def draw(self, row_shape: Sequence[int]) -> np.ndarray:
        shape = (1, *(int(d) for d in row_shape))
        return np.concatenate([g.standard_normal(shape, dtype=np.float32) for g in self.generators])
