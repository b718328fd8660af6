"""`edge-sdk rollback`: make the previous release current again."""

from __future__ import annotations

import click

from edge_sdk.cli.common import emit_json, json_option, quiet_option, say, table


@click.command("rollback")
@click.option("--root", default="~/edge-sdk", show_default=True, help="Install root given to `edge-sdk install`.")
@click.option("--to", "to", help="Release id (or a unique prefix) to switch to instead of the previous one.")
@click.option("--list", "list_only", is_flag=True, help="List the installed releases and change nothing.")
@json_option
@quiet_option
def command(root, to, list_only, as_json, quiet):
    """Switch `current` back to the release before it (verified first), atomically."""
    from edge_sdk.deploy.install import list_releases, rollback

    if list_only:
        rows = list_releases(root)
        if as_json:
            emit_json(rows)
        else:
            say(table([("*" if r["current"] else "", r["release"], r["name"] or "-", r["board"] or "-",
                               r["sdk_version"] or "-") for r in rows],
                             ("", "release", "name", "board", "sdk")))
        return
    s = rollback(root, to=to)
    if as_json:
        emit_json(s)
    elif not quiet:
        if s["status"] == "already-current":
            say(f"release {s['current']} is already current")
        else:
            say(f"current -> releases/{s['current']} (was {s['previous']})")
