"""Convert a component as stream parts: export and validate every part, then validate the chain.

Each part (``stream_split.split_unet``) goes through the format's own converter and is validated
against its PyTorch wrapper on every output (the skip tensors included), like any artifact. Then
the exported parts of one format and precision are run in turn through the format's runtime, one
session open at a time, on the component's validation inputs, and the chain's output is compared
with the whole component in PyTorch (``stream.validation`` in the manifest): the split must
change nothing but kernel order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from edge_sdk.converters.base import Converter
from edge_sdk.converters.quiet import quiet_exporters
from edge_sdk.converters.spec import ComponentSpec
from edge_sdk.converters.stream_split import PartSpec, run_chain, split_unet
from edge_sdk.converters.validate import DEFAULT_TOLERANCE, Metrics, compare, validation_inputs
from edge_sdk.errors import ValidationError
from edge_sdk.runtimes.registry import open_artifact


def _np(t: torch.Tensor, dtype: str) -> np.ndarray:
    return t.detach().numpy().astype(dtype)


def validate_part(part: PartSpec, entry, runtime: str, precision: str, *, samples: int, tolerance: float | None,
                  where: str, options: dict[str, Any]) -> Metrics:
    """Every output of the exported part against its PyTorch module; the worst figures."""
    spec = part.spec
    tol = DEFAULT_TOLERANCE.get(precision, 1e-1) if tolerance is None else tolerance
    worst = [0.0, 0.0, 1.0, None]
    feeds = validation_inputs(spec, samples)
    with open_artifact(entry, runtime, device="cpu", options=options) as rt:
        for feed in feeds:
            with torch.no_grad():
                ref = spec.module(*feed.values())
            ref = ref if isinstance(ref, tuple) else (ref,)
            got = rt.run({s.name: _np(feed[s.name], s.dtype) for s in rt.inputs})
            for name, r in zip(spec.output_names, ref, strict=True):
                rel, mx, cos, psnr = compare(r.float().numpy(), got[name].astype(np.float32))
                worst = [max(worst[0], rel), max(worst[1], mx), min(worst[2], cos),
                         psnr if worst[3] is None or (psnr is not None and psnr < worst[3]) else worst[3]]
    m = Metrics(worst[0], worst[1], worst[2], worst[3], tol, len(feeds), worst[0] <= tol, runtime)
    if not m.passed:
        raise ValidationError(f"{where}: relative L2 error {worst[0]:.3g} against PyTorch is over the {precision} "
                              f"tolerance {tol:g} (max abs {worst[1]:.3g})",
                              hint="the part was not written; pass --tolerance to accept it explicitly")
    return m


def validate_chain(component: ComponentSpec, parts: list[PartSpec], entries: list, runtime: str, precision: str,
                   fmt: str, *, samples: int, tolerance: float | None, options: dict[str, Any]) -> dict[str, Any]:
    """The exported parts run in turn (one session open at a time) against the whole component in PyTorch."""
    tol = DEFAULT_TOLERANCE.get(precision, 1e-1) if tolerance is None else tolerance
    feeds = validation_inputs(component, samples)
    envs: list[dict[str, np.ndarray]] = [{k: v.numpy() for k, v in f.items()} for f in feeds]
    for entry in entries:
        with open_artifact(entry, runtime, device="cpu", options=options) as rt:
            for env in envs:
                env.update(rt.run({s.name: env[s.name].astype(s.dtype) for s in rt.inputs}))
    out = component.output_names[0]
    rel = mx = chain_mx = 0.0
    for feed, env in zip(feeds, envs, strict=True):
        with torch.no_grad():
            ref = component.module(*feed.values())
        ref = (ref[0] if isinstance(ref, (tuple, list)) else ref).float()
        r, m, _, _ = compare(ref.numpy(), env[out].astype(np.float32))
        rel, mx = max(rel, r), max(mx, m)
        # The wrappers themselves: the PyTorch chain against the whole (same kernels, so ~0).
        chain = run_chain(parts, feed)[out].float()
        chain_mx = max(chain_mx, float((chain - ref).abs().max()))
    rec = {"format": fmt, "precision": precision, "runtime": runtime, "rel_l2": rel, "max_abs": mx,
           "torch_chain_max_abs": chain_mx, "tolerance": tol, "samples": len(feeds), "passed": rel <= tol}
    if not rec["passed"]:
        raise ValidationError(f"{component.role} {fmt} {precision} stream: the parts run in turn differ from the "
                              f"whole component by relative L2 {rel:.3g} (tolerance {tol:g}, max abs {mx:.3g})",
                              hint="the parts were not written; pass --tolerance to accept them explicitly")
    return rec


def convert_stream(writer, converters: dict[str, Converter], component: ComponentSpec, precisions: list[str], *,
                   samples: int, tolerance: float | None, tell: Callable[[str, str, str, str], None],
                   steps: int, granularity: str = "blocks", attention_chunks: int | None = None) -> list[str]:
    """Export, validate and record the parts of ``component`` for every format and precision; the notes.

    ``granularity``: ``blocks`` or ``layers`` (``stream_split``). ``attention_chunks``: the parts'
    attention in that many query chunks (``--attention sliced:N``: a streamed part then never holds a
    whole score matrix; the chain is validated against the whole component computed the same way).
    Raises the first EdgeSDKError (a streamed component is all or nothing per convert)."""
    if attention_chunks is None:
        return _convert_stream(writer, converters, component, precisions, samples=samples, tolerance=tolerance,
                               tell=tell, steps=steps, granularity=granularity)
    from edge_sdk.converters.attention import SLICED, chunked

    writer.set_stream_attention(component.role, f"{SLICED}:{attention_chunks}")
    with chunked(component.module, attention_chunks):
        return _convert_stream(writer, converters, component, precisions, samples=samples, tolerance=tolerance,
                               tell=tell, steps=steps, granularity=granularity)


def _convert_stream(writer, converters: dict[str, Converter], component: ComponentSpec, precisions: list[str], *,
                    samples: int, tolerance: float | None, tell: Callable[[str, str, str, str], None],
                    steps: int, granularity: str) -> list[str]:
    role = component.role
    parts = split_unet(component, granularity)
    writer.set_stream_split(role, granularity)
    for p in parts:
        writer.add_stream_part(role, p.name, p.spec.input_specs(), p.spec.output_specs(),
                               parameters=_own_parameters(p))
    notes = []
    for fmt, conv in converters.items():
        runtime = conv.validating_runtime()
        options = dict(conv.validation_options)
        for prec in precisions:
            entries = []
            for i, p in enumerate(parts):
                label = f"{prec}/part {i + 1}/{len(parts)} {p.name}"
                tell(role, fmt, label, "convert")
                out_dir = writer.artifact_dir(role, fmt, prec, f"part{i:02d}-{p.name}")
                t0 = time.perf_counter()
                with quiet_exporters():
                    art = conv.convert(p.spec, prec, out_dir, calibration_steps=steps)
                seconds = time.perf_counter() - t0
                tell(role, fmt, label, "validate")
                m = validate_part(p, art.entry, runtime, prec, samples=samples, tolerance=tolerance,
                                  where=f"{role} {fmt} {label}", options=options)
                writer.add_stream_artifact(role, p.name, fmt, prec, art.entry, files=art.files,
                                           validation=m.to_json(), convert_seconds=seconds)
                entries.append(art.entry)
                tell(role, fmt, label, "done")
            tell(role, fmt, f"{prec}/stream chain", "validate")
            rec = validate_chain(component, parts, entries, runtime, prec, fmt, samples=samples,
                                 tolerance=tolerance, options=options)
            writer.add_stream_validation(role, rec)
            notes.append(f"{role} {fmt} {prec}: {len(parts)} stream parts, chain rel L2 {rec['rel_l2']:.2g} "
                         f"against the whole component")
    return notes


def _own_parameters(part: PartSpec) -> int:
    """Parameters a part's graph holds: those its forward touches (a wrapper may hold the whole UNet)."""
    mod = part.spec.module
    if hasattr(mod, "block"):
        return sum(p.numel() for p in mod.block.parameters())
    unet = mod.unet
    if part.name == "out":
        subs = [unet.conv_norm_out, unet.conv_out]
    else:
        subs = [unet.time_embedding, unet.conv_in, getattr(unet, "add_embedding", None)]
    return sum(p.numel() for s in subs if s is not None for p in s.parameters())
