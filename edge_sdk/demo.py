"""`edge-sdk demo`: convert the shipped demo model (cached), plan it for this board, generate a grid.

Conversion needs the host extras (torch); the cached bundle then runs like any other bundle.
The cache key holds the SDK version, the formats and precisions, and the weights' digest, so a
new edge-sdk or new weights rebuild it.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_sdk import __version__
from edge_sdk.bundle import Bundle
from edge_sdk.cache import cache_dir
from edge_sdk.errors import BundleError, EdgeSDKError, ModelSourceError
from edge_sdk.pipelines.result import GenerationResult
from edge_sdk.planning.plan import Plan


def _weights_digest() -> str:
    from importlib import resources

    h = hashlib.sha256()
    weights = resources.files("edge_sdk.converters").joinpath("demo/weights")
    names = sorted(p.name for p in weights.iterdir() if p.name.endswith(".safetensors"))
    if not names:
        raise ModelSourceError("the demo model's weights are not installed",
                               hint="reinstall edge-sdk from a full source tree")
    for name in names:
        h.update(name.encode())
        h.update(weights.joinpath(name).read_bytes())
    return h.hexdigest()[:12]


def demo_bundle(formats: Iterable[str] | None = None, precisions: Iterable[str] = ("fp32",), *,
                rebuild: bool = False, progress: Callable[..., None] | None = None) -> tuple[Bundle, float]:
    """The converted demo bundle from the cache, converting it first if needed.

    Returns the bundle and the seconds spent converting (0 when it came from the cache).
    """
    from edge_sdk.formats.registry import default_format

    fmts, precs = sorted(formats or [default_format()]), sorted(precisions)
    key = f"demo-{__version__}-{'_'.join(fmts)}-{'_'.join(precs)}-{_weights_digest()}"
    root = cache_dir()
    path = root / key
    if path.exists() and not rebuild:
        try:
            return Bundle.open(path), 0.0
        except BundleError:
            pass  # a damaged cache entry is rebuilt below
    try:
        from edge_sdk.converters.convert import convert
    except ImportError as e:
        raise ModelSourceError(f"converting the demo model needs the host extras ({e.name} is missing)",
                               hint="pip install 'edge-sdk[convert]'") from None
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    bundle = convert("edge_sdk.converters.demo.spec:factory", path, formats=fmts, precisions=precs,
                     name="edge-sdk-demo-digits", overwrite=True, progress=progress)
    return bundle, time.perf_counter() - t0


@dataclass
class DemoReport:
    bundle: str
    board: str | None
    board_reasons: list[str]
    plan: Plan
    convert_seconds: float
    timings: dict[str, float]
    peak_rss_bytes: int
    out: str
    images: int
    class_labels: list[int]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "board": self.board, "board_reasons": self.board_reasons,
                "plan": {k: {"runtime": c.runtime, "format": c.format, "precision": c.precision,
                             "device": c.device, "resident": c.resident}
                         for k, c in self.plan.components.items()},
                "cfg": self.plan.cfg, "decode_tiling": None if self.plan.decode_tiling is None else
                vars(self.plan.decode_tiling), "convert_seconds": round(self.convert_seconds, 3),
                "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
                "peak_rss_mb": round(self.peak_rss_bytes / 2**20, 1), "out": self.out, "images": self.images,
                "class_labels": self.class_labels, **self.extra}


def run_demo(*, board: str | None = "auto", formats: Iterable[str] | None = None,
             precisions: Iterable[str] = ("fp32",), steps: int | None = None, seed: int = 0,
             per_class: int = 2, guidance: float | None = None, sampler: str | None = None,
             out: str | os.PathLike = "demo.png", rebuild: bool = False,
             convert_progress: Callable[..., None] | None = None,
             step_callback: Callable[[Any], Any] | None = None) -> tuple[DemoReport, GenerationResult]:
    """Convert (cached), plan, generate ``per_class`` images of every class, write a grid PNG."""
    from edge_sdk.api import load
    from edge_sdk.measure.memory import peak_rss_bytes
    from edge_sdk.pipelines.request import GenerateRequest
    from edge_sdk.planning.board_detect import detect_board

    bundle, convert_s = demo_bundle(formats, precisions, rebuild=rebuild, progress=convert_progress)
    n = int(bundle.model["num_classes"])
    labels = np.repeat(np.arange(n), per_class).reshape(n, per_class).T.ravel()  # one row per repeat
    g = float(bundle.sampler.get("default_guidance", 1.0) if guidance is None else guidance)
    reasons: list[str] = []
    if board in (None, "auto"):  # detected here so the report can say why; no match: the installed runtimes
        board, reasons = detect_board()
        if board is None:
            reasons = reasons + ["no profile matched: using the installed runtimes"]
    request = GenerateRequest(steps=steps, seed=seed, sampler=sampler, guidance=g, class_labels=labels.tolist())
    with load(bundle, board=board, request=request) as gen:  # the board's plan, under its memory cap
        plan = gen.plan
        result = gen.generate(request, callback=step_callback)
    path = result.save(out, cols=n)
    try:
        peak = peak_rss_bytes()
    except EdgeSDKError:
        peak = 0
    report = DemoReport(bundle=str(bundle.root), board=plan.board, board_reasons=reasons, plan=plan,
                        convert_seconds=convert_s, timings=result.timings, peak_rss_bytes=peak, out=str(path),
                        images=len(labels), class_labels=labels.tolist(),
                        extra={"sampler": result.info.get("sampler"), "steps": result.info.get("steps"),
                               "guidance": g, "seed": seed})
    return report, result
