"""`edge-sdk tune`: measure the candidate plans on this board and store the fastest good one."""

from __future__ import annotations

import click

from edge_sdk.cli.commands.bench import progress_printer
from edge_sdk.cli.common import emit_json, json_option, parse_size, quiet_option, say, table


@click.command("tune")
@click.argument("bundle", type=click.Path())
@click.option("--board", default="auto", show_default=True,
              help="Board profile name or file (auto: the profile detected for this machine).")
@click.option("--steps", type=click.IntRange(1, 1000), help="Step count to tune at (default: the bundle's).")
@click.option("--size", help="Output WIDTHxHEIGHT in pixels (default: the model's native size).")
@click.option("--min-psnr", type=float, default=30.0, show_default=True,
              help="Quality bar: final-image PSNR (dB) against the fp32 plan on the same seed.")
@click.option("--runtimes", help="Comma-separated runtimes to consider (default: the board's).")
@click.option("--precisions", help="Comma-separated precisions to consider (default: all the bundle has).")
@click.option("--threads", type=click.IntRange(1, 256), help="Threads per session (default: the board's, "
              "at most this machine's CPUs).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@click.option("--repeats", type=click.IntRange(1, 1000), default=3, show_default=True)
@click.option("--deep-cache", "deep_cache", default="2,3,5", show_default=True, metavar="N,N,...",
              help="DeepCache intervals to try on top of the fastest plan, each kept only if it meets --min-psnr "
                   "(needs --stream-parts denoiser in the bundle; 'none' to skip).")
@click.option("--dry-run", is_flag=True, help="Measure and report, write nothing.")
@json_option
@quiet_option
def command(bundle, board, steps, size, min_psnr, runtimes, precisions, threads, seed, repeats, deep_cache, dry_run,
            as_json, quiet):
    """Measure the plans the planner considers for BUNDLE on this board; keep the fastest whose final
    image is within --min-psnr of fp32, stored as <bundle>.tuned-<board>.json next to the bundle,
    which `edge-sdk run` then uses on this board."""
    from edge_sdk.converters.precision import normalize_all
    from edge_sdk.measure.bench import fmt_psnr
    from edge_sdk.measure.tune import tune

    precs = normalize_all(precisions.split(",")) if precisions else None
    rts = [r.strip() for r in runtimes.split(",") if r.strip()] if runtimes else None
    intervals = _intervals(deep_cache)
    res = tune(bundle, board, steps=steps, size=parse_size(size), seed=seed, min_psnr=min_psnr, runtimes=rts,
               precisions=precs, threads=threads, repeats=repeats, write=not dry_run, deep_cache=intervals,
               progress=progress_printer(quiet or as_json))
    if as_json:
        emit_json(res.to_json())
        return
    if quiet:
        return
    rows = []
    for c in res.candidates:
        mark = "*" if c is res.chosen else ""
        if not c.ok:
            rows.append((mark, c.label, "failed: " + (c.error or "")[:60], "", "", ""))
            continue
        rows.append((mark, c.label, f"{c.end_to_end_ms:.1f}", f"{c.peak_rss_mb:.0f}", fmt_psnr(c.psnr_db),
                     "yes" if c.psnr_db is not None and c.psnr_db >= min_psnr else "no"))
    say(f"board {res.board}, {res.settings['steps']} steps, {res.settings['threads']} threads; "
               f"reference {res.settings['reference']}")
    say(table(rows, ("", "plan", "e2e ms", "peak MB", "PSNR dB", f">= {min_psnr:g} dB")))
    where = f"stored in {res.path}" if res.path else "not stored (--dry-run)"
    say(f"chosen: {res.chosen.label} ({where})")


def _intervals(text: str) -> list[int]:
    """'2,3,5' -> [2, 3, 5]; 'none' or '' -> []."""
    from edge_sdk.errors import UsageError
    from edge_sdk.pipelines.deep_cache import check_interval

    if text.strip().lower() in ("", "none", "0", "off"):
        return []
    try:
        return [check_interval(int(x)) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--deep-cache takes comma-separated integers or 'none', got {text!r}") from None
