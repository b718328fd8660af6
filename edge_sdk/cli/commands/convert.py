"""`edge-sdk convert`: a model source into a verified bundle (workstation side)."""

from __future__ import annotations

import sys

import click

from edge_sdk.cli.common import StageProgress, emit_json, json_option, progress_enabled, quiet_option, say, table
from edge_sdk.formats.registry import default_format


@click.command("convert")
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(), help="Bundle folder to write.")
@click.option("--format", "formats", default=default_format(), show_default=True,
              help="Comma-separated formats: onnx, openvino, tflite, or all.")
@click.option("--precision", "precisions", default="fp32", show_default=True,
              help="Comma-separated precisions: fp32, fp16, int8 (= int8-static, calibrated), int8-weight, or all.")
@click.option("--name", help="Bundle name (default: from the source).")
@click.option("--tolerance", type=float, help="Accept artifacts up to this relative L2 error instead of the "
              "precision's default bar (recorded in the manifest).")
@click.option("--samples", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Inputs each artifact is validated on.")
@click.option("--calibration-steps", type=click.IntRange(1, 1000),
              help="int8 calibration follows the sampler for this many steps (default: the model's default steps).")
@click.option("--static-variant", is_flag=True,
              help="Also write fixed-shape artifacts (for NPUs) in formats that make them (openvino).")
@click.option("--keep-going", is_flag=True,
              help="Write the artifacts that passed even if others failed (default: all-or-nothing).")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at --output (atomically).")
@click.option("--variant", help="Diffusers folders: load *.<VARIANT>.safetensors weights (e.g. fp16); "
              "default: plain weights, else the only variant present.")
@click.option("--lora", "loras", multiple=True, metavar="FILE[:SCALE]",
              help="Diffusers folders: fuse this LoRA (diffusers/PEFT .safetensors) into the UNet at SCALE "
                   "(default 1); repeatable. Recorded with its sha256 in the manifest.")
@click.option("--vae", type=click.Path(exists=True, file_okay=False),
              help="Diffusers folders: use this VAE folder (AutoencoderKL, or AutoencoderTiny/TAESD for small "
                   "boards) instead of the folder's vae/.")
@click.option("--tiny-vae", type=click.Path(exists=True, file_okay=False),
              help="Diffusers folders: also convert this AutoencoderTiny (TAESD) folder as an alternative "
                   "decoder; board plans pick it where the full VAE does not fit, or fits only with tiles, "
                   "reloads or sequential CFG.")
@click.option("--attention", metavar="full|sliced:N",
              help="Also convert the UNet and VAE decoder with attention in N query chunks (the 'sliced' "
                   "variant): a far lower activation peak at large sizes; board plans pick it where needed.")
@click.option("--kind", type=click.Choice(["generator", "denoiser"]),
              help="module:factory sources: what the returned module is (default: one input whose output is "
                   "shaped unlike it = generator).")
@click.option("--stream-parts", "stream", default="", metavar="COMPONENTS",
              help="Also split these components (e.g. denoiser: a diffusers UNet) at block boundaries into "
                   "parts that a board plan can run one at a time (streaming); each part and the chain "
                   "are validated.")
@click.option("--stream-over-mb", "stream_over_mb", type=click.FloatRange(min=0), default=None,
              help="Split every component whose fp32 weights are larger than this (where it can be split).")
@click.option("--stream-split", "stream_split", type=click.Choice(["blocks", "layers"]), default="blocks",
              show_default=True,
              help="Stream parts per UNet block, or per resnet/transformer/resampler (layers: smaller parts for "
                   "boards whose cap is under the largest block, e.g. SD 1.5 on a Pi Zero 2 W).")
@json_option
@quiet_option
def command(source, output, formats, precisions, name, tolerance, samples, calibration_steps, static_variant,
            keep_going, overwrite, variant, loras, vae, tiny_vae, attention, kind, stream, stream_over_mb, stream_split,
            as_json, quiet):
    """Convert SOURCE into a bundle: every artifact is checked against PyTorch.

    SOURCE is a `module:factory` entry point (the factory returns `(model, example_inputs)` or a
    ModelSpec), a `torch.export` program (`.pt2`) or a local diffusers-style folder
    (model_index.json with unet/, vae/, text_encoder/, tokenizer/, scheduler/). See
    `edge-sdk formats` for what each format makes.
    """
    from edge_sdk.converters.convert import ConvertReport, convert

    # Progress goes to stderr, so --json keeps stdout machine-readable and still shows the stages.
    progress = StageProgress(enabled=not quiet, live=progress_enabled(quiet))
    report = ConvertReport(None)
    try:
        bundle = convert(source, output, formats=formats, precisions=precisions, name=name, overwrite=overwrite,
                         tolerance=tolerance, samples=samples, calibration_steps=calibration_steps,
                         static_variant=static_variant, keep_going=keep_going, progress=progress, report=report,
                         variant=variant, kind=kind, loras=loras, vae=vae,
                         tiny_vae=tiny_vae, stream=[c.strip() for c in stream.split(",") if c.strip()],
                         stream_over=None if stream_over_mb is None else int(stream_over_mb * 2**20),
                         attention=attention, stream_split=stream_split)
    finally:
        progress.close()
    rows = []
    for comp in bundle.components:
        for a in bundle.artifacts(comp):
            v = a.validation or {}
            label = a.precision + (f"/{a.variant}" if a.variant else "")
            rows.append((comp, a.format, label, a.size, v.get("rel_l2"), v.get("cosine"),
                         report.seconds.get(f"{comp} {a.format} {label}")))
        for rec in bundle.component(comp).get("stream", {}).get("validation", []):
            parts = bundle.stream_parts(comp, rec["format"], rec["precision"])
            rows.append((comp, rec["format"], f"{rec['precision']}/{len(parts)} parts",
                         sum(p.artifact.size for p in parts), rec["rel_l2"], None, None))
    failures = [{"component": f.component, "format": f.format, "precision": f.precision, "variant": f.variant,
                 "error": f.error.message} for f in report.failures]
    if as_json:
        emit_json({"bundle": str(bundle.root), "artifacts": [dict(zip(
            ("component", "format", "precision", "size_bytes", "rel_l2", "cosine", "convert_seconds"), r, strict=False))
            for r in rows], "failures": failures})
    elif not quiet:
        say(table([(c, f, p, f"{s / 1e6:.2f} MB", f"{r:.2e}", "-" if cos is None else f"{cos:.6f}",
                    "-" if sec is None else f"{sec:.1f}s")
                          for c, f, p, s, r, cos, sec in rows],
                         ("component", "format", "precision", "size", "rel L2", "cosine", "time")))
        for f in failures:
            say(f"skipped (--keep-going): {f['error']}", err=True)
        say(f"wrote {bundle.root}", file=sys.stdout)
