"""Seeded noise: the one documented generator behind every random number a sampler uses.

Rule: ``randn(seed, shape)`` is
``np.random.Generator(np.random.PCG64(seed)).standard_normal(shape, dtype=np.float32)``.
PCG64 and numpy's float32 ziggurat are defined bit for bit, so the same seed gives the same
starting noise on every machine, operating system and runtime (the runtime never draws noise).

Batches: a batch of B rows is one draw of shape (B, ...), which numpy fills in C order, so row k
is exactly what the same generator yields on its k-th draw of one row. A batch of 4 from seed s is
therefore the first 4 single-row draws of seed s, and changing the batch size never changes the
earlier rows.

Stochastic samplers (DDPM, DDIM with eta > 0, Euler ancestral, LCM) draw their per-step noise
from a second generator, ``make_generator(seed)``, with the same rule, one draw of the latent's
full shape per step that needs noise.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np

from edge_sdk.errors import UsageError

SeedLike = Union[int, np.random.Generator, None]


def make_generator(seed: SeedLike) -> np.random.Generator:
    """A PCG64 generator from an int seed (a Generator passes through unchanged)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        # Fresh OS entropy: only when the caller asked for no reproducibility.
        return np.random.Generator(np.random.PCG64())
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(
            f"seed must be a non-negative integer, got {seed!r}",
            hint="pass e.g. --seed 42",
        )
    return np.random.Generator(np.random.PCG64(int(seed)))


def randn(seed: SeedLike, shape: Sequence[int]) -> np.ndarray:
    """Standard normal float32 noise of ``shape`` from ``seed`` (see the module docstring)."""
    return make_generator(seed).standard_normal(tuple(int(s) for s in shape), dtype=np.float32)
