"""`edge-sdk run`: generate images from a bundle on this device."""

from __future__ import annotations

import click

from edge_sdk.cli.common import StepBar, emit_json, json_option, parse_size, progress_enabled, quiet_option, say


@click.command("run")
@click.argument("bundle", type=click.Path())
@click.option("--steps", type=click.IntRange(1, 1000), help="Sampler steps (default: the bundle's).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@click.option("--sampler",
              help="ddim, ddpm, euler, euler_ancestral, heun, dpmpp_2m, unipc, lcm (default: the bundle's).")
@click.option("--guidance", type=float, help="Classifier-free guidance scale (default: the bundle's).")
@click.option("--class", "class_labels", multiple=True, type=int, help="Class label(s) for class-conditional models.")
@click.option("--batch", type=click.IntRange(1, 256), help="Images to generate (default 1, or one per --class).")
@click.option("--size", help="Output WIDTHxHEIGHT in pixels (default: the model's native size).")
@click.option("--prompt", help="Text prompt, for text-conditioned models.")
@click.option("--negative-prompt", help="What guidance steers away from (default: the empty prompt).")
@click.option("--init-image", type=click.Path(dir_okay=False), help="img2img: start from this image (PNG, JPEG...).")
@click.option("--strength", type=click.FloatRange(0.0, 1.0, min_open=True),
              help="img2img: how much to change the init image, (0, 1] (default 0.8).")
@click.option("--runtime", help="onnxruntime, openvino or litert (default: the plan's / first installed).")
@click.option("--precision", help="Artifact precision to run (default: the plan's / fp32).")
@click.option("--device", default="auto", show_default=True, help="Runtime device: cpu, cuda, tensorrt, GPU, NPU, ...")
@click.option("--threads", type=click.IntRange(1, 256), help="Threads per session.")
@click.option("--board", help="Board profile NAME or PATH.toml (or auto): run the plan made for it, under its "
              "memory cap.")
@click.option("--out", "out", default="out.png", show_default=True, type=click.Path(), help="PNG to write.")
@click.option("--isolate", is_flag=True, help="Load and run in a watched child process: a native crash or OOM kill "
              "there becomes an error here (edge_sdk.guard.supervise).")
@click.option("--call-timeout", type=float, metavar="SECONDS",
              help="Longest one model call may run before the run stops with an error (default: "
                   "EDGE_SDK_CALL_TIMEOUT, else 1800).")
@click.option("--deep-cache", type=click.IntRange(1, 1000), metavar="N",
              help="DeepCache: run the whole UNet every N steps and only its shallow stream parts in between, "
                   "on the deep features kept from the last full step (faster, approximate; needs a bundle "
                   "converted with --stream-parts denoiser; 1: off).")
@click.option("--deep-cache-branch", type=click.Choice(["down0", "conv_in"]),
              help="Shallow path for --deep-cache: down0 (conv_in + first down block + last up block; default) or "
                   "conv_in (conv_in + last up block: faster, less exact).")
@json_option
@quiet_option
def command(bundle, steps, seed, sampler, guidance, class_labels, batch, size, prompt, negative_prompt, init_image,
            strength, runtime, precision, device, threads, board, out, isolate, call_timeout, deep_cache,
            deep_cache_branch, as_json, quiet):
    """Generate with BUNDLE and write a PNG (a grid when several images).

    With --board the run uses the plan made for that board (narrowed by --runtime, --precision,
    --device and --threads) and stops if it crosses the board's memory cap.
    """
    from edge_sdk.api import load
    from edge_sdk.pipelines.deep_cache import label as deep_cache_label
    from edge_sdk.pipelines.request import GenerateRequest

    width, height = parse_size(size) or (None, None)
    # One request, validated once: the board's plan is made for its size and batch, then it runs.
    request = GenerateRequest(steps=steps, seed=seed, sampler=sampler, guidance=guidance,
                              class_labels=list(class_labels) or None, batch=batch, height=height, width=width,
                              prompt=prompt, negative_prompt=negative_prompt, init_image=init_image,
                              strength=strength)
    gen = load(bundle, board=board, request=request, runtime=runtime, precision=precision, device=device,
               threads=threads, isolate=isolate, call_timeout=call_timeout, deep_cache=deep_cache,
               deep_cache_branch=deep_cache_branch)
    bars: list[StepBar] = []

    def on_step(info) -> None:  # sized by the run itself: img2img runs fewer steps, Heun more calls
        if not bars:
            bars.append(StepBar("sampling", info.total, progress_enabled(quiet or as_json)))
        bars[0].update(1)

    try:
        result = gen.generate(request, callback=on_step)  # under the plan's memory cap, if it has one
    finally:
        for bar in bars:
            bar.close()
        gen.close()
    path = result.save(out)
    summary = {"out": str(path), "images": int(len(result.images)), "size": list(result.images.shape[1:3]),
               "timings_s": {k: round(v, 4) for k, v in result.timings.items()}, **result.info,
               "plan": {k: f"{c.runtime}:{c.format}/{c.precision}" + ("+streamed" if c.stream and not c.deep_cache
                                                                      else "") + deep_cache_label(c)
                        for k, c in gen.plan.components.items()}}
    if gen.plan.estimates.get("peak"):
        summary["plan_estimated_peak_mb"] = round(gen.plan.estimates["peak"] / 2**20, 1)
    if as_json:
        emit_json(summary)
    elif not quiet:
        say(f"wrote {path} ({summary['images']} image(s), {result.images.shape[2]}x{result.images.shape[1]}) "
                   f"in {sum(result.timings.values()):.2f} s")
