"""convert(): model source -> artifacts per format and precision -> validated -> bundle."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edge_sdk.bundle import Bundle, BundleWriter
from edge_sdk.converters.registry import formats as known_formats
from edge_sdk.converters.registry import get_converter
from edge_sdk.converters.sources import load_source
from edge_sdk.converters.validate import validate_artifact
from edge_sdk.errors import UsageError
from edge_sdk.faults import kill_point

ProgressFn = Callable[[str, str, str, str], None]  # (component, format, precision, stage)


def _split(values: str | Iterable[str] | None, default: list[str], universe: list[str]) -> list[str]:
    if values is None:
        return default
    items = [v.strip() for v in (values.split(",") if isinstance(values, str) else values) if v.strip()]
    if items == ["all"]:
        return universe
    return items


def convert(source: Any, output: str | Path, *, formats: str | Iterable[str] | None = None,
            precisions: str | Iterable[str] | None = None, name: str | None = None, overwrite: bool = False,
            tolerance: float | None = None, samples: int = 3, components: Iterable[str] | None = None,
            progress: ProgressFn | None = None) -> Bundle:
    """Convert ``source`` into a bundle at ``output``; every artifact is validated against PyTorch.

    An artifact over its precision's tolerance stops the convert (nothing is written) unless a
    ``tolerance`` is given explicitly, in which case that bar is used and recorded.
    """
    fmts = _split(formats, ["onnx"], known_formats())
    precs = _split(precisions, ["fp32"], ["fp32", "fp16", "int8"])
    for f in fmts:
        get_converter(f)  # unknown formats fail before any work
    spec = load_source(source, name=name)
    wanted = list(components) if components else list(spec.components)
    report = progress or (lambda *a: None)
    with BundleWriter(output, name=name or spec.name, overwrite=overwrite) as writer:
        writer.model = spec.model
        writer.sampler = spec.sampler
        writer.description = spec.description
        for role in wanted:
            if role not in spec.components:
                raise UsageError(f"model has no component {role!r}", hint=f"it has {', '.join(spec.components)}")
            comp = spec.components[role]
            writer.add_component(role, comp.input_specs(), comp.output_specs(), parameters=comp.parameters(),
                                 config=comp.config or None)
            for rel, src in comp.extra_files.items():
                writer.add_extra_file(role, src, rel)
            for fmt in fmts:
                conv = get_converter(fmt)
                for prec in precs:
                    report(role, fmt, prec, "convert")
                    t0 = time.perf_counter()
                    art = conv.convert(comp, prec, writer.artifact_dir(role, fmt, prec))
                    seconds = time.perf_counter() - t0
                    report(role, fmt, prec, "validate")
                    metrics = validate_artifact(comp, art.entry, conv.runtime, prec, samples=samples,
                                                tolerance=tolerance,
                                                where=f"{role} {fmt} {prec}")
                    writer.add_artifact(role, fmt, prec, art.entry, files=art.files,
                                        static_shapes=art.static_shapes, validation=metrics.to_json(),
                                        convert_seconds=seconds)
                    kill_point("convert:artifact")  # interruption tests (edge_sdk.faults)
        report("", "", "", "write")
        return writer.commit()
