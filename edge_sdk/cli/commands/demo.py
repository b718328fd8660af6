"""`edge-sdk demo`: the shipped, trained demo model end to end on this machine."""

from __future__ import annotations

import click

from edge_sdk.cli.common import (
    StageProgress,
    StepBar,
    emit_json,
    json_option,
    progress_enabled,
    quiet_option,
    say,
    table,
)
from edge_sdk.formats.registry import default_format


@click.command("demo")
@click.option("--board", default="auto", show_default=True,
              help="Board profile name or file; 'auto' detects the board this runs on.")
@click.option("--format", "formats", default=default_format(), show_default=True,
              help="Formats to convert the demo model to (onnx, openvino, tflite, comma-separated).")
@click.option("--precision", "precisions", default="fp32", show_default=True, help="Precisions to convert.")
@click.option("--steps", type=click.IntRange(1, 1000), help="Sampler steps (default: the model card's 8).")
@click.option("--sampler", help="Sampler name (default: dpmpp_2m).")
@click.option("--guidance", type=float, help="Classifier-free guidance scale (default: the model card's).")
@click.option("--per-class", type=click.IntRange(1, 16), default=2, show_default=True,
              help="Images per class (one grid row each).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@click.option("--out", default="demo.png", show_default=True, type=click.Path(), help="PNG grid to write.")
@click.option("--rebuild", is_flag=True, help="Convert again even if the cached bundle is valid.")
@json_option
@quiet_option
def command(board, formats, precisions, steps, sampler, guidance, per_class, seed, out, rebuild, as_json, quiet):
    """Generate a grid of every class with edge-sdk's own trained demo model.

    The first run converts the shipped weights into a bundle in the user cache folder
    ($EDGE_SDK_CACHE, else ~/.cache/edge-sdk); later runs reuse it until the SDK or the weights
    change. Nothing is downloaded.
    """
    from edge_sdk.demo import run_demo

    show = progress_enabled(quiet or as_json)
    # The first run converts: the same per-artifact stage display as `edge-sdk convert`, on stderr.
    convert_progress = StageProgress(enabled=not quiet and not as_json, live=show)

    fmt_list = [f for f in formats.split(",") if f]
    prec_list = [p for p in precisions.split(",") if p]
    bar: StepBar | None = None

    def on_step(info):
        nonlocal bar
        if bar is None:
            bar = StepBar("sampling", info.total, show)
        bar.update(1)

    try:
        report, _ = run_demo(board=board, formats=fmt_list, precisions=prec_list, steps=steps, seed=seed,
                             per_class=per_class, guidance=guidance, sampler=sampler, out=out, rebuild=rebuild,
                             convert_progress=convert_progress, step_callback=on_step)
    finally:
        convert_progress.close()
        if bar is not None:
            bar.close()
    data = report.to_json()
    if as_json:
        emit_json(data)
        return
    if quiet:
        return
    say(f"board    {report.board or 'none matched'}" + (f"  ({'; '.join(report.board_reasons)})"
                                                               if report.board_reasons else ""))
    say(f"bundle   {report.bundle}" + (f"  (converted in {report.convert_seconds:.1f} s)"
                                               if report.convert_seconds else "  (cached)"))
    rows = [(name, c["runtime"], c["format"], c["precision"], c["device"], "yes" if c["resident"] else "no")
            for name, c in data["plan"].items()]
    say(table(rows, ("component", "runtime", "format", "precision", "device", "resident")))
    tiling = data["decode_tiling"]
    say(f"cfg      {data['cfg']}; decode tiling {'off' if not tiling else tiling}")
    stages = [(k, f"{v * 1000:.1f} ms") for k, v in report.timings.items()]
    stages.append(("peak RSS", f"{data['peak_rss_mb']} MB"))
    say(table(stages, ("stage", "time / memory")))
    say(f"wrote {report.out}: {report.images} images ({data['sampler']}, {data['steps']} steps, "
               f"guidance {data['guidance']}, seed {data['seed']})")
