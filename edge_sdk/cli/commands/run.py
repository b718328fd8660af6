"""`edge-sdk run`: generate images from a bundle on this device."""

from __future__ import annotations

import click

from edge_sdk.cli.common import StepBar, emit_json, json_option, progress_enabled, quiet_option


def parse_size(value: str | None) -> tuple[int | None, int | None]:
    if not value:
        return None, None
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 512x512", param_hint="--size") from None
    return w, h


@click.command("run")
@click.argument("bundle", type=click.Path())
@click.option("--steps", type=click.IntRange(1, 1000), help="Sampler steps (default: the bundle's).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@click.option("--sampler", help="ddim, ddpm, euler, euler_ancestral, heun, dpmpp_2m, unipc, lcm (default: the bundle's).")
@click.option("--guidance", type=float, help="Classifier-free guidance scale (default: the bundle's).")
@click.option("--class", "class_labels", multiple=True, type=int, help="Class label(s) for class-conditional models.")
@click.option("--batch", type=click.IntRange(1, 256), help="Images to generate (default 1, or one per --class).")
@click.option("--size", help="Output WIDTHxHEIGHT in pixels (default: the model's native size).")
@click.option("--runtime", help="onnxruntime, openvino or litert (default: the plan's / first installed).")
@click.option("--precision", help="Artifact precision to run (default: the plan's / fp32).")
@click.option("--device", default="auto", show_default=True, help="Runtime device: cpu, cuda, tensorrt, GPU, NPU, ...")
@click.option("--threads", type=click.IntRange(1, 256), help="Threads per session.")
@click.option("--board", help="Board profile NAME or PATH.toml: run the plan made for it, under its memory cap.")
@click.option("--out", "out", default="out.png", show_default=True, type=click.Path(), help="PNG to write.")
@json_option
@quiet_option
def command(bundle, steps, seed, sampler, guidance, class_labels, batch, size, runtime, precision, device, threads,
            board, out, as_json, quiet):
    """Generate with BUNDLE and write a PNG (a grid when several images)."""
    import edge_sdk

    width, height = parse_size(size)
    if board:
        from edge_sdk.planner import load_for_board

        gen = load_for_board(bundle, board, height=height, width=width, batch=batch or len(class_labels) or 1,
                             guidance=guidance, runtime=runtime, precision=precision)
    else:
        gen = edge_sdk.load(bundle, runtime=runtime, precision=precision, device=device, threads=threads)
    total = steps or int(gen.bundle.sampler.get("default_steps", 20))
    bar = StepBar("sampling", total, progress_enabled(quiet or as_json))
    from edge_sdk.memory import MemoryWatch

    try:
        # The cap is watched during the run (a no-op without a board plan): crossing it stops the run.
        with MemoryWatch(gen.plan.memory_cap_bytes, unified=gen.plan.memory_unified, where="edge-sdk run"):
            result = gen.generate(steps=steps, seed=seed, sampler=sampler, guidance=guidance,
                                  class_labels=list(class_labels) or None, batch=batch, height=height, width=width,
                                  callback=lambda info: bar.update(1))
    finally:
        bar.close()
        gen.close()
    path = result.save(out)
    summary = {"out": str(path), "images": int(len(result.images)), "size": list(result.images.shape[1:3]),
               "timings_s": {k: round(v, 4) for k, v in result.timings.items()}, **result.info,
               "plan": {k: f"{c.runtime}:{c.format}/{c.precision}" for k, c in gen.plan.components.items()}}
    if as_json:
        emit_json(summary)
    elif not quiet:
        click.echo(f"wrote {path} ({summary['images']} image(s), {result.images.shape[2]}x{result.images.shape[1]}) "
                   f"in {sum(result.timings.values()):.2f} s")
