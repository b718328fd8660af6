"""convert(): model source -> artifacts per format and precision -> validated -> bundle.

Every requested (component, format, precision[, variant]) is attempted, even after one fails,
so an error can say which other formats did convert the component. A convert is all-or-nothing
by default: if anything failed, nothing is written. ``keep_going=True`` writes what passed and
returns the failures in ``ConvertReport.failures`` (a component left with no artifact is dropped).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_sdk.bundle import Bundle, BundleWriter, check_replaceable
from edge_sdk.converters.base import Converter
from edge_sdk.converters.calibrate import attach_calibration
from edge_sdk.converters.precision import PRECISIONS, check_supported, normalize_all
from edge_sdk.converters.quiet import quiet_exporters
from edge_sdk.converters.registry import formats as known_formats
from edge_sdk.converters.registry import get_converter, normalize_format
from edge_sdk.converters.sources import load_source
from edge_sdk.converters.stream_convert import convert_stream
from edge_sdk.converters.validate import validate_artifact
from edge_sdk.errors import ConversionError, EdgeSDKError, UnsupportedOpError, UsageError
from edge_sdk.formats.registry import default_format
from edge_sdk.guard import interrupt
from edge_sdk.guard.faults import kill_point
from edge_sdk.names import check_name, sanitize

log = logging.getLogger(__name__)
ProgressFn = Callable[[str, str, str, str], None]  # (component, format, precision[/variant], stage)
# Stages reported, in order, per artifact: convert, validate, then done or failed; finally 'write'.


@dataclass
class Failure:
    component: str
    format: str
    precision: str
    variant: str
    error: EdgeSDKError

    def label(self) -> str:
        return f"{self.component} {self.format} {self.precision}" + (f" ({self.variant})" if self.variant else "")


@dataclass
class ConvertReport:
    bundle: Bundle | None
    failures: list[Failure] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _split(values: str | Iterable[str] | None, default: list[str], universe: list[str]) -> list[str]:
    if values is None:
        return default
    items = [v.strip() for v in (values.split(",") if isinstance(values, str) else values) if v.strip()]
    if not items:
        return default
    if items == ["all"]:
        return list(universe)
    return items


def _combined_error(failures: list[Failure], converted: dict[str, list[str]]) -> ConversionError:
    """One error for the whole convert: the first failure's kind, every failure listed."""
    first = failures[0]
    lines = []
    for f in failures:
        msg = f.error.message
        if isinstance(f.error, UnsupportedOpError):
            ok = converted.get(f.component, [])
            msg += f"; converted by: {', '.join(ok) if ok else 'no other format'}"
        lines.append(f"{f.label()}: {msg}" if not msg.startswith(f.component) else msg)
    cls = type(first.error) if isinstance(first.error, ConversionError) else ConversionError
    hint = first.error.hint or ""
    if isinstance(first.error, UnsupportedOpError):
        hint = ("drop that format (--format), replace the operator in the model, or pass --keep-going to write "
                "the formats that converted")
    more = f" (and {len(failures) - 1} more: " + "; ".join(lines[1:]) + ")" if len(failures) > 1 else ""
    err = cls(lines[0] + more, hint=(hint + "; nothing was written").lstrip("; "))
    err.failures = failures  # type: ignore[attr-defined]
    return err


@interrupt.stops_on_signals
def convert(source: Any, output: str | Path, *, formats: str | Iterable[str] | None = None,
            precisions: str | Iterable[str] | None = None, name: str | None = None, overwrite: bool = False,
            tolerance: float | None = None, samples: int = 3, components: Iterable[str] | None = None,
            static_variant: bool = False, calibration_steps: int | None = None, keep_going: bool = False,
            progress: ProgressFn | None = None, report: ConvertReport | None = None,
            variant: str | None = None, kind: str | None = None, loras: Iterable[Any] | None = None,
            vae: str | Path | None = None, tiny_vae: str | Path | None = None,
            stream: Iterable[str] | None = None, stream_over: int | None = None,
            attention: str | None = None, stream_split: str = "blocks") -> Bundle:
    """Convert ``source`` into a bundle at ``output``; every artifact is validated against PyTorch.

    An artifact over its precision's tolerance stops the convert (nothing is written) unless a
    ``tolerance`` is given explicitly, in which case that bar is used and recorded. int8-static is
    calibrated on the model's own sampling trajectory at ``calibration_steps`` (default: the
    source's default step count, else 20). ``static_variant`` adds fixed-shape artifacts (for
    NPUs) in the formats that make them. ``variant`` (diffusers folders: ``fp16``, ...) and
    ``kind`` (factories: ``generator``/``denoiser``) and ``loras`` (``FILE[:SCALE]``, fused into
    a diffusers folder's UNet) and ``vae`` (a VAE folder replacing vae/, e.g. TAESD) and
    ``tiny_vae`` (a TAESD folder converted as the decoder's ``tiny`` variant) go to ``load_source``.
    ``stream`` names components to split into stream parts as well (``stream_convert``);
    ``stream_over`` (bytes) splits every component whose fp32 weights are larger, where it can.
    ``stream_split``: ``blocks`` (one part per UNet block) or ``layers`` (per resnet/transformer, for
    boards whose cap is under the largest block). With ``attention``, the stream parts are sliced too.
    ``attention`` (``sliced:N``): also convert the denoiser and decoder with attention in N query
    chunks, as their ``sliced`` variant (converters/attention.py), for the planner's small-board rungs.
    """
    from edge_sdk.converters.attention import add_sliced_variants, parse_attention

    chunks = parse_attention(attention)
    fmts = [normalize_format(f) for f in _split(formats, [default_format()], known_formats())]
    precs = normalize_all(_split(precisions, ["fp32"], list(PRECISIONS)))
    for f in fmts:
        for p in precs:
            check_supported(f, p)  # before any work
    if tolerance is not None and not tolerance > 0:
        raise UsageError(f"tolerance must be a positive number, got {tolerance}")
    if overwrite and os.path.lexists(output):  # before the (slow) source load: refuse a non-bundle early
        check_replaceable(Path(output).absolute())
    if name is not None:  # a given name must already be valid; a derived one is made valid
        check_name(name, what="bundle name")
    tell = progress or (lambda *a: None)
    tell("", "", "", "load")  # loading a full-size folder takes minutes; say so
    spec = load_source(source, name=name, variant=variant, kind=kind, loras=list(loras or []), vae=vae,
                       tiny_vae=tiny_vae)
    spec.name = sanitize(spec.name)
    wanted = list(components) if components else list(spec.components)
    for role in wanted:
        if role not in spec.components:
            raise UsageError(f"model has no component {role!r}", hint=f"it has {', '.join(spec.components)}")
    if spec.sampler:  # the sampler `run` will build from this section must accept it
        from edge_sdk.converters.scheduler_config import check_sampler

        check_sampler(spec.sampler, f"model {spec.name}")
    streamed = _stream_roles(spec, wanted, stream, stream_over)
    steps = int(calibration_steps or spec.sampler.get("default_steps") or 20)
    attach_calibration(spec)
    if chunks is not None:
        add_sliced_variants(spec, chunks)
    rep = report if report is not None else ConvertReport(None)
    converters: dict[str, Converter] = {f: get_converter(f) for f in fmts}
    try:
        with BundleWriter(output, name=name or spec.name, overwrite=overwrite) as writer:
            writer.model = spec.model
            writer.sampler = spec.sampler
            writer.description = spec.description
            converted: dict[str, list[str]] = {}
            for role in wanted:
                comp = spec.components[role]
                passed: list[tuple] = []
                for fmt, conv in converters.items():
                    variants = [""] + (["static"] if static_variant and "static" in conv.variants else [])
                    for variant in variants:
                        for prec in precs:
                            done = _one(writer, conv, comp, fmt, prec, variant, steps, samples, tolerance, tell, rep)
                            kill_point("convert:artifact")  # interruption tests (edge_sdk.guard.faults)
                            interrupt.check()
                            if done is not None:
                                passed.append(done)
                                if fmt not in converted.setdefault(role, []):
                                    converted[role].append(fmt)
                    # Alternative networks (a TAESD decoder): exported as plain artifacts of their
                    # own module, recorded under their variant name.
                    for alt_name, alt in comp.alternatives.items():
                        if alt_name in getattr(conv, "skips_alternatives", ()):
                            rep.notes[f"{role} {fmt} {alt_name}"] = [conv.skips_alternatives[alt_name]]
                            continue
                        for prec in precs:
                            done = _one(writer, conv, alt, fmt, prec, alt_name, steps, samples, tolerance, tell,
                                        rep, export_variant="")
                            interrupt.check()
                            if done is not None:
                                passed.append(done)
                if passed:  # with keep_going, a component none of whose artifacts passed is left out
                    writer.add_component(role, comp.input_specs(), comp.output_specs(),
                                         parameters=comp.parameters(), config=comp.config or None)
                    for rel, src in comp.extra_files.items():
                        writer.add_extra_file(role, src, rel)
                    for args, kwargs in passed:
                        writer.add_artifact(*args, **kwargs)
                    if role in streamed:
                        rep.notes[f"{role} stream"] = convert_stream(
                            writer, converters, comp, precs, samples=samples, tolerance=tolerance, tell=tell,
                            steps=steps, granularity=stream_split, attention_chunks=chunks)
            if rep.failures and (not keep_going or not any(converted.values())):
                raise _combined_error(rep.failures, converted)
            tell("", "", "", "write")
            interrupt.check()  # never publish a bundle after a signal, whatever swallowed it
            bundle = writer.commit()
    finally:
        for conv in converters.values():
            conv.close()
    rep.bundle = bundle
    return bundle


def _stream_roles(spec, wanted: list[str], stream: Iterable[str] | None, stream_over: int | None) -> set[str]:
    """Components to split: those named (each must be splittable), and those over ``stream_over`` bytes
    of fp32 weights that can be split (a note for those that cannot)."""
    from edge_sdk.converters.stream_split import splittable

    roles = set()
    for role in stream or ():
        if role not in spec.components:
            raise UsageError(f"--stream-parts: model has no component {role!r}",
                             hint=f"it has {', '.join(spec.components)}")
        why = splittable(spec.components[role])
        if why:
            raise UsageError(f"--stream-parts: {why}", hint="stream the UNet denoiser only, or drop --stream-parts")
        roles.add(role)
    if stream_over is not None:
        for role in wanted:
            comp = spec.components[role]
            if comp.parameters() * 4 > stream_over:
                if not splittable(comp):
                    roles.add(role)
                else:
                    log.info("%s is over the streaming size but cannot be split: %s", role, splittable(comp))
    return roles & set(wanted)


def _one(writer: BundleWriter, conv: Converter, comp, fmt: str, prec: str, variant: str, steps: int,
         samples: int, tolerance: float | None, tell: ProgressFn, rep: ConvertReport,
         export_variant: str | None = None) -> tuple | None:
    """Convert and validate one artifact; the add_artifact arguments if it passed, else None.

    ``export_variant``: what the converter is asked to make when it differs from the variant the
    artifact is recorded as (an alternative network is a plain export of its own module)."""
    role = comp.role
    label = prec + (f"/{variant}" if variant else "")
    tell(role, fmt, label, "convert")
    out_dir = writer.artifact_dir(role, fmt, prec, variant)
    t0 = time.perf_counter()
    try:
        with quiet_exporters():
            art = conv.convert(comp, prec, out_dir, variant=variant if export_variant is None else export_variant,
                               calibration_steps=steps)
        seconds = time.perf_counter() - t0
        tell(role, fmt, label, "validate")
        metrics = validate_artifact(comp, art.entry, conv.validating_runtime(), prec, samples=samples,
                                    tolerance=tolerance, where=f"{role} {fmt} {label}",
                                    options=dict(conv.validation_options))
    except EdgeSDKError as e:
        interrupt.check()  # a signal wrapped into a conversion error stops everything, not one artifact
        tell(role, fmt, label, "failed")
        log.info("%s %s %s failed: %s", role, fmt, label, e.message)
        rep.failures.append(Failure(role, fmt, prec, variant, e))
        _clear(out_dir)
        return None
    if art.notes:
        rep.notes[f"{role} {fmt} {label}"] = list(art.notes)
    rep.seconds[f"{role} {fmt} {label}"] = seconds
    tell(role, fmt, label, "done")
    return ((role, fmt, prec, art.entry), dict(variant=variant, files=art.files, static_shapes=art.static_shapes,
                                               validation=metrics.to_json(), convert_seconds=seconds))


def _clear(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
