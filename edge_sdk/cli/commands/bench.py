"""`edge-sdk bench`: latency, memory and quality of a bundle per runtime and precision."""

from __future__ import annotations

import click

from edge_sdk.cli.common import emit_json, json_option, parse_size, quiet_option, say, table


def parse_steps(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        steps = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of step counts, e.g. 4,8,20",
                                 param_hint="--steps") from None
    if not steps or min(steps) < 1:
        raise click.BadParameter(f"{value!r}: step counts must be positive", param_hint="--steps")
    return steps


def progress_printer(quiet: bool):
    def tell(i: int, n: int, label: str) -> None:
        if not quiet and i < n:
            say(f"[{i + 1}/{n}] {label}", err=True)

    return tell


@click.command("bench")
@click.argument("bundle", type=click.Path())
@click.option("--runtimes", help="Comma-separated runtimes (default: every installed one that opens an artifact).")
@click.option("--precisions", help="Comma-separated precisions: fp32, fp16, int8 (= int8-static), int8-weight.")
@click.option("--formats", help="Comma-separated artifact formats: onnx, openvino, tflite.")
@click.option("--steps", help="Step count(s), comma-separated, e.g. 4,8,20 (default: the bundle's).")
@click.option("--size", help="Output WIDTHxHEIGHT in pixels (default: the model's native size).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@click.option("--guidance", type=float, help="Classifier-free guidance scale (default: the bundle's).")
@click.option("--threads", type=click.IntRange(1, 256), help="Threads per session (default: the runtime's).")
@click.option("--device", default="auto", show_default=True, help="Runtime device.")
@click.option("--warmup", type=click.IntRange(1, 100), default=1, show_default=True, help="Untimed generations first.")
@click.option("--repeats", type=click.IntRange(1, 1000), default=3, show_default=True,
              help="Timed generations (at least; quick models repeat for --min-seconds).")
@click.option("--min-seconds", type=click.FloatRange(0, 3600), default=1.0, show_default=True,
              help="Keep repeating quick generations for this long.")
@click.option("--chart", type=click.Path(dir_okay=False), help="Write a PNG chart of latency vs quality.")
@click.option("--in-process", is_flag=True, help="Measure in this process (peak memory is then not per config).")
@json_option
@quiet_option
def command(bundle, runtimes, precisions, formats, steps, size, seed, guidance, threads, device, warmup, repeats,
            min_seconds, chart, in_process, as_json, quiet):
    """Measure BUNDLE on this machine for every runtime x precision (x steps).

    Per component: median and p90 latency after warm-up; end to end: median and p90; the time per
    sampler step; peak resident memory (each configuration in a fresh process); and the final
    image's PSNR against the fp32 reference on the same seed.
    """
    from edge_sdk.measure.bench import bench, report_rows, write_chart

    report = bench(bundle, runtimes=runtimes, precisions=precisions, formats=formats, steps=parse_steps(steps),
                   size=parse_size(size), seed=seed, guidance=guidance, threads=threads, device=device,
                   warmup=warmup, repeats=repeats, min_seconds=min_seconds, isolate=not in_process,
                   progress=progress_printer(quiet or as_json))
    chart_path = write_chart(report, chart) if chart else None
    if as_json:
        data = report.to_json()
        data["chart"] = str(chart_path) if chart_path else None
        emit_json(data)
        return
    if quiet:
        return
    m = report.machine
    say(f"{m['cpu_model']} ({m['arch']}, {m['usable_cpus']} CPUs usable; int8 dot product: "
               f"{'yes' if m['int8_dot_product'] else 'no'}), threads per session: {threads or 'runtime default'}")
    rows, headers = report_rows(report)
    say(table(rows, headers))
    say(f"PSNR: final image vs {report.settings['reference']} on seed {seed}; times in ms, "
               f"medians of >= {repeats} runs after {warmup} warm-up")
    if chart_path:
        say(f"chart: {chart_path}")
