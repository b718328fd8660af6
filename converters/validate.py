"""Validate a converted artifact: run it through its own runtime and compare with PyTorch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_sdk.converters.spec import ComponentSpec
from edge_sdk.errors import ValidationError
from edge_sdk.runtimes.registry import open_artifact

# Relative L2 error allowed per precision (docs/converters.md). fp32 differs from PyTorch only by
# kernel summation order (~1e-6 measured; 1e-4 leaves room for deep nets and other CPUs); fp16
# keeps ~3 significant digits (1e-3 measured per layer, errors add up over depth); int8 weights
# keep ~2 (per-channel rounding, ~1e-2 measured); int8 activations add a rounding per layer
# (~3e-2..1e-1 measured on the small test networks).
DEFAULT_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8-weight": 5e-2, "int8-static": 1.5e-1}


@dataclass
class Metrics:
    rel_l2: float
    max_abs: float
    cosine: float
    psnr_db: float | None
    tolerance: float
    samples: int
    passed: bool
    runtime: str
    forced: bool = False

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("rel_l2", "max_abs", "cosine", "psnr_db", "tolerance",
                                           "samples", "passed", "runtime")}
        if self.forced:
            d["forced"] = True
        return d


def compare(ref: np.ndarray, got: np.ndarray) -> tuple[float, float, float, float | None]:
    """(relative L2, max abs, cosine, PSNR in dB over the reference's range)."""
    ref = ref.astype(np.float64).ravel()
    got = got.astype(np.float64).ravel()
    diff = got - ref
    denom = np.linalg.norm(ref)
    rel = float(np.linalg.norm(diff) / denom) if denom > 0 else float(np.linalg.norm(diff))
    cos = float(np.dot(ref, got) / (np.linalg.norm(ref) * np.linalg.norm(got) + 1e-30))
    mse = float(np.mean(diff**2))
    peak = float(ref.max() - ref.min())
    psnr = None if mse == 0 or peak == 0 else float(10 * np.log10(peak**2 / mse))
    return rel, float(np.abs(diff).max()), cos, psnr


def validation_inputs(component: ComponentSpec, count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """The example inputs plus ``count - 1`` perturbed copies (same shapes, same integer ranges)."""
    g = torch.Generator().manual_seed(seed)
    sets = [dict(component.example_inputs)]
    for _ in range(count - 1):
        d = {}
        for name, t in component.example_inputs.items():
            if t.dtype.is_floating_point:
                scale = t.float().std() if t.numel() > 1 and float(t.float().std()) > 0 else t.abs().max().clamp(min=1)
                d[name] = (torch.randn(t.shape, generator=g) * scale
                           + (t.float().mean() if t.numel() > 1 else 0)).to(t.dtype)
            else:
                hi = int(t.max()) + 1 if t.numel() else 1
                d[name] = torch.randint(0, max(hi, 1), t.shape, generator=g, dtype=t.dtype)
        sets.append(d)
    return sets


def validate_artifact(component: ComponentSpec, entry: Path, runtime: str, precision: str, *,
                      samples: int = 3, tolerance: float | None = None, force: bool = False,
                      where: str = "", options: dict[str, Any] | None = None) -> Metrics:
    """Run ``entry`` and the torch module on the same inputs; the worst figures over ``samples``."""
    tol = DEFAULT_TOLERANCE.get(precision, 1e-1) if tolerance is None else tolerance
    inputs = validation_inputs(component, samples)
    worst = (0.0, 0.0, 1.0, None)
    # The CPU: the reference everyone has; accelerators are checked on the device (`edge-sdk bench`).
    with open_artifact(entry, runtime, device="cpu", options=options or {}) as rt:
        for feed in inputs:
            with torch.no_grad():
                ref = component.module(*feed.values())
            ref = ref[0] if isinstance(ref, (tuple, list)) else ref
            # By name; each runtime reports its own dtypes (TFLite takes int32 where torch had int64).
            np_feed = {s.name: feed[s.name].numpy().astype(s.dtype) for s in rt.inputs}
            got = rt.run(np_feed)[rt.outputs[0].name]
            rel, mx, cos, psnr = compare(ref.float().numpy(), got.astype(np.float32))
            worst = (max(worst[0], rel), max(worst[1], mx), min(worst[2], cos),
                     psnr if worst[3] is None or (psnr is not None and psnr < worst[3]) else worst[3])
    passed = worst[0] <= tol
    m = Metrics(worst[0], worst[1], worst[2], worst[3], tol, len(inputs), passed, runtime, forced=force and not passed)
    if not passed and not force:
        raise ValidationError(
            f"{where or component.role}: relative L2 error {worst[0]:.3g} against PyTorch is over the "
            f"{precision} tolerance {tol:g} (max abs {worst[1]:.3g}, cosine {worst[2]:.6f})",
            hint=f"the artifact was not written; pass --tolerance {worst[0] * 1.1:.2g} to accept it explicitly")
    return m
