"""`edge-sdk export`: a bundle in another serving system's layout (`export triton`)."""

from __future__ import annotations

import click

from edge_sdk.cli.common import emit_json, json_option


@click.group("export")
def command() -> None:
    """Write a bundle in another serving system's layout."""


@command.command("triton")
@click.argument("bundle", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--backend", type=click.Choice(["onnxruntime", "openvino"]), default="onnxruntime", show_default=True,
              help="Triton backend: ONNX artifacts for onnxruntime, OpenVINO IR for openvino.")
@click.option("--precision", default="fp32", show_default=True, help="Which artifacts of the bundle to export.")
@click.option("--component", "components", multiple=True, help="Only these components (repeatable; default all).")
@json_option
def triton(bundle, out, backend, precision, components, as_json):
    """A Triton model repository in OUT (new or empty): config.pbtxt + verified files per component.

    \b
    Serve it with: tritonserver --model-repository OUT
    A board plan can then put a component there: PlanRequest(remote={"denoiser": "http://host:8000"}).
    """
    from edge_sdk.serve.triton import export_triton

    summary = export_triton(bundle, out, backend=backend, precision=precision, components=list(components) or None)
    if as_json:
        emit_json(summary)
        return
    for name, m in summary["models"].items():
        size = sum(f["size"] for f in m["files"]) / 1e6
        click.echo(f"{name:14s} {backend} {precision}  {len(m['files'])} file(s), {size:.2f} MB, sha256 checked")
    click.echo(f"wrote {out}: tritonserver --model-repository {out}")
