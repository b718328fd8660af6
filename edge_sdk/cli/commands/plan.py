"""`edge-sdk plan`: what a bundle would run with on a board, and its per-stage memory estimate."""

from __future__ import annotations

import click

from edge_sdk.cli.common import emit_json, json_option, say, table
from edge_sdk.units import MB


@click.command("plan")
@click.argument("bundle", type=click.Path())
@click.option("--board", default="auto", show_default=True,
              help="Board profile NAME (see `edge-sdk boards`) or PATH.toml; auto: the board detected here.")
@click.option("--size", help="Output WIDTHxHEIGHT in pixels (default: the model's native size).")
@click.option("--batch", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--guidance", type=float, help="CFG scale the run will use (default: the bundle's).")
@click.option("--runtime", help="Plan with this runtime only.")
@click.option("--precision", help="Plan with this precision only.")
@click.option("--tile", type=click.IntRange(1, 4096), help="Force this decode tile (latent cells).")
@click.option("--decoder", type=click.Choice(["full", "tiny"]),
              help="Force the full VAE or the bundle's tiny (TAESD) decoder (default: tiny only where it "
                   "avoids tiles or reloads, or nothing else fits).")
@click.option("--no-measure", is_flag=True, help="Use role defaults instead of measuring components here.")
@json_option
def command(bundle, board, size, batch, guidance, runtime, precision, tile, decoder, no_measure, as_json):
    """Plan BUNDLE for a board: runtime, device and precision per component, CFG, tiles, peak memory."""
    from edge_sdk.bundle import Bundle
    from edge_sdk.cli.common import parse_size
    from edge_sdk.planning.planner import PlanRequest, describe, plan, plan_summary

    width, height = parse_size(size) or (None, None)
    b = Bundle.open(bundle)
    p = plan(b, board, PlanRequest(height=height, width=width, batch=batch, guidance=guidance, runtime=runtime,
                                   precision=precision, tile=tile, measure=not no_measure,
                                   decoder=decoder))
    if as_json:
        emit_json(plan_summary(p))
        return
    h, w = p.size or (None, None)
    say(f"plan for {b.name} on {p.board} at {w}x{h}, batch {batch}: memory cap {p.memory_cap_bytes // MB} MB"
               + (" (CPU + GPU, unified)" if p.memory_unified else ""))
    say(table(describe(p), ("component", "runtime", "device", "format", "precision", "threads", "resident")))
    tiling = (f"{p.decode_tiling.tile}-cell tiles, {p.decode_tiling.overlap}-cell overlap" if p.decode_tiling
              else "whole image" if "decoder" in p.components else "none (no decoder)")
    say(f"\nCFG {p.cfg}; decode: {tiling}")
    rows = [(stage, f"{v / MB:.0f} MB", f"{100 * v / p.memory_cap_bytes:.0f}% of cap")
            for stage, v in p.estimates.items()]
    say(table(rows, ("stage", "estimated peak", "")))
    if p.rung:
        say(f"rung {p.rung}: estimated peak {p.estimates.get('peak', 0) / MB:.0f} MB")
    sd = p.slowdown
    if sd and (sd.get("factors") or sd.get("not_measured")):
        why = "; ".join(sd.get("factors", [])) or "no measured factor"
        unk = f"; not measured: {', '.join(sd['not_measured'])}" if sd.get("not_measured") else ""
        fits = "fits" if sd["fastest_fits"] else "does not fit"
        say(f"expected slowdown ~{sd['factor']:g}x (an estimate: {why}{unk}) against the fastest plan "
            f"(estimated {sd['fastest_peak_mb']:.0f} MB, {fits} the cap)")
    for n in p.notes:
        say(f"  note: {n}")
