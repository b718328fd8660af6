"""`edge-sdk convert`: a model source into a verified bundle (workstation side)."""

from __future__ import annotations

import sys

import click

from edge_sdk.cli.common import emit_json, json_option, progress_enabled, quiet_option, table


@click.command("convert")
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(), help="Bundle folder to write.")
@click.option("--format", "formats", default="onnx", show_default=True,
              help="Comma-separated formats: onnx, openvino, tflite, or all.")
@click.option("--precision", "precisions", default="fp32", show_default=True,
              help="Comma-separated precisions: fp32, fp16, int8 (int8 = static, calibrated), int8-weight.")
@click.option("--name", help="Bundle name (default: from the source).")
@click.option("--tolerance", type=float, help="Accept artifacts up to this relative L2 error instead of the "
              "precision's default bar (recorded in the manifest).")
@click.option("--samples", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Inputs each artifact is validated on.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at --output (atomically).")
@json_option
@quiet_option
def command(source, output, formats, precisions, name, tolerance, samples, overwrite, as_json, quiet):
    """Convert SOURCE into a bundle: every artifact is checked against PyTorch.

    SOURCE is a `module:factory` entry point (the factory returns `(model, example_inputs)` or a
    ModelSpec), a `torch.export` program (`.pt2`) or a local diffusers-style folder.
    """
    from edge_sdk.converters.convert import convert

    show = progress_enabled(quiet or as_json)

    def progress(component, fmt, prec, stage):
        if show or (not quiet and not as_json):
            msg = f"[{stage}] {component} {fmt} {prec}".rstrip() if component else f"[{stage}] bundle"
            click.echo(msg, err=True)

    bundle = convert(source, output, formats=formats, precisions=precisions, name=name, overwrite=overwrite,
                     tolerance=tolerance, samples=samples, progress=progress)
    rows = []
    for comp in bundle.components:
        for a in bundle.artifacts(comp):
            v = a.validation or {}
            rows.append((comp, a.format, a.precision + (f"/{a.variant}" if a.variant else ""),
                         f"{a.size / 1e6:.2f} MB", f"{v.get('rel_l2', float('nan')):.2e}",
                         f"{v.get('cosine', float('nan')):.6f}"))
    if as_json:
        emit_json({"bundle": str(bundle.root), "artifacts": [dict(zip(
            ("component", "format", "precision", "size", "rel_l2", "cosine"), r)) for r in rows]})
    elif not quiet:
        click.echo(table(rows, ("component", "format", "precision", "size", "rel L2", "cosine")))
        click.echo(f"wrote {bundle.root}", file=sys.stdout)
