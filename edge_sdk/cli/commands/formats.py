"""`edge-sdk formats`: which precisions each converter makes, and how (the support matrix)."""

from __future__ import annotations

import click

from edge_sdk.cli.common import emit_json, json_option, say, table


@click.command("formats")
@json_option
def command(as_json):
    """Print the format x precision support matrix of `edge-sdk convert` (host side)."""
    from edge_sdk.converters.precision import PRECISIONS, support_matrix
    from edge_sdk.converters.validate import DEFAULT_TOLERANCE

    matrix = support_matrix()
    if as_json:
        emit_json({"formats": matrix, "default_tolerance": {p: DEFAULT_TOLERANCE[p] for p in PRECISIONS}})
        return
    rows = [(fmt, p, f"{DEFAULT_TOLERANCE[p]:g}", how) for fmt, methods in matrix.items()
            for p in PRECISIONS if (how := methods.get(p))]
    say(table(rows, ("format", "precision", "rel-L2 bar", "how")))
