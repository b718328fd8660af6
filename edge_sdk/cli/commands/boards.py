"""`edge-sdk boards`: the board profiles, and one in full with `boards show NAME`."""

from __future__ import annotations

import click

from edge_sdk.cli.common import emit_json, json_option, say, table
from edge_sdk.units import MB


@click.group("boards", invoke_without_command=True)
@json_option
@click.pass_context
def command(ctx, as_json):
    """List board profiles (built-in and on $EDGE_SDK_BOARD_PATH); `boards show NAME` prints one."""
    if ctx.invoked_subcommand is not None:
        return
    from edge_sdk.planning.board import list_boards

    boards = list_boards()
    if as_json:
        emit_json([{"name": b.name, "title": b.title, "ram_mb": b.ram_bytes // MB, "cap_mb": b.cap_bytes // MB,
                    "unified": b.unified, "runtimes": [f"{r}:{d}" for r, d in b.runtimes]} for b in boards])
        return
    rows = [(b.name, b.title, f"{b.ram_bytes // MB}", f"{b.cap_bytes // MB}" + (" (unified)" if b.unified else ""),
             f"{b.cpu_cores}x {b.cpu_arch}", f"{b.runtimes[0][0]}:{b.runtimes[0][1]}") for b in boards]
    say(table(rows, ("name", "board", "RAM MB", "cap MB", "cpu", "first runtime")))


@command.command("show")
@click.argument("name")
@json_option
def show(name, as_json):
    """Print the profile NAME (or a profile file's PATH) with the source of each figure."""
    from edge_sdk.planning.board import load_board

    b = load_board(name)
    if as_json:
        emit_json(b.to_json())
        return
    say(f"{b.name}: {b.title}  ({b.path})")
    if b.notes:
        say(f"  {b.notes}")
    rows = [
        ("RAM", f"{b.ram_bytes // MB} MB", b.sources.get("memory", "")),
        ("memory cap", f"{b.cap_bytes // MB} MB" + (" (CPU + GPU, unified)" if b.unified else ""),
         b.sources.get("memory_cap", "")),
        ("cpu", f"{b.cpu_model} ({b.cpu_cores} cores, {b.cpu_arch})", b.sources.get("cpu", "")),
        ("isa", " ".join(b.isa), ""),
        *[(f"accelerator ({a['kind']})", a["name"] + (f", {a['peak']}" if a.get("peak") else ""), a["source"])
          for a in b.accelerators],
        ("runtimes", ", ".join(f"{r}:{d}" for r, d in b.runtimes), b.sources.get("runtimes", "")),
        *[(f"precision {role}", " > ".join(order), b.sources.get("precision", "") if role == "default" else "")
          for role, order in b.precision.items()],
        ("threads", str(b.threads), b.sources.get("threads", "")),
        ("decode tiles", f"{b.min_tile}..{b.max_tile} latent cells, overlap {b.overlap_fraction:.0%}",
         b.sources.get("tiling", "")),
    ]
    say(table(rows, ("field", "value", "source")))
