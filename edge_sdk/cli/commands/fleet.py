"""`edge-sdk fleet`: deploy a bundle to an Ansible inventory of boards, and show where each stands."""

from __future__ import annotations

import click

from edge_sdk.cli.common import emit_json, json_option, quiet_option, table


@click.group("fleet")
def command():
    """Rolling deploys to many boards with Ansible (needs `pip install 'edge-sdk[fleet]'`).

    The inventory names each host's board profile (`edge_sdk_board: rpi4-4gb`); ssh keys, vault
    and connection settings stay Ansible's (the inventory, ansible.cfg, `--vault-id`)."""


@command.command("deploy")
@click.argument("inventory", type=click.Path())
@click.argument("bundle", type=click.Path())
@click.option("--serial", default="1", show_default=True,
              help="Hosts per batch after the canary: a count or a percentage (25%).")
@click.option("--canary", help="Host updated first, alone; any failure there stops the run (default: the first host).")
@click.option("--max-fail-percentage", type=click.IntRange(0, 100), default=0, show_default=True,
              help="Failed hosts a batch may have (percent) before the run stops; 0 stops at the first.")
@click.option("--limit", help="Ansible host pattern to deploy to (as ansible-playbook --limit).")
@click.option("--forks", type=click.IntRange(1, 1000), help="Hosts Ansible works on at once within a batch.")
@click.option("--state-dir", type=click.Path(), help="Where packages and per-host results are kept "
              "(default ~/.cache/edge-sdk/fleet/<inventory>-<hash>).")
@click.option("-e", "--extra-vars", "extra_vars", multiple=True,
              help="Passed to ansible-playbook -e (e.g. edge_sdk_service=myapp.service); repeatable.")
@click.option("--vault-id", multiple=True, help="Passed to ansible-playbook --vault-id; repeatable.")
@json_option
@quiet_option
def deploy_cmd(inventory, bundle, serial, canary, max_fail_percentage, limit, forks, state_dir, extra_vars, vault_id,
               as_json, quiet):
    """Deploy BUNDLE to every host of INVENTORY: canary first, then batches of --serial.

    Packages once per board kind here, refuses hosts whose plan does not fit before touching any,
    health-checks each host with one generation, rolls a failed host back and stops the run."""
    from edge_sdk.errors import DeployError
    from edge_sdk.fleet.runner import deploy

    ansible_args = [a for v in vault_id for a in ("--vault-id", v)]
    echo = None if quiet else (lambda line: click.echo(line, err=True))
    s = deploy(inventory, bundle, serial=serial, canary=canary, max_fail_percentage=max_fail_percentage,
               state_dir=state_dir, limit=limit, forks=forks, extra_vars=list(extra_vars), ansible_args=ansible_args,
               echo=echo)
    if as_json:
        emit_json(s)
    elif not quiet:
        click.echo(_table(list(s["hosts"].values())))
        click.echo(f"{len(s['hosts'])} hosts in {s['seconds']:.1f} s (canary {s['canary']}, serial {s['serial']})")
    if not s["ok"]:
        bad = {h: r["result"] for h, r in s["hosts"].items() if r["result"] not in ("ok", "changed")}
        raise DeployError("the fleet deploy stopped: " + ", ".join(f"{h} {r}" for h, r in bad.items()),
                          hint=f"see `edge-sdk fleet status {inventory}`; fix the failed host and run deploy again")


@command.command("status")
@click.argument("inventory", type=click.Path())
@click.option("--state-dir", type=click.Path(), help="The --state-dir given to `fleet deploy`.")
@json_option
def status_cmd(inventory, state_dir, as_json):
    """Board, release, health and last result of every host of INVENTORY (from the last deploys)."""
    from edge_sdk.fleet.runner import status

    rows = status(inventory, state_dir=state_dir)
    if as_json:
        emit_json(rows)
    else:
        click.echo(_table(rows))


def _health(h) -> str:
    """A record's health (a dict, from deploy) or a status row's (already a word)."""
    if isinstance(h, dict):
        return "passed" if h.get("passed") else "failed"
    return h or "-"


def _table(rows: list[dict]) -> str:
    return table([(r["host"], r.get("board") or "-", r.get("release") or "-", _health(r.get("health")),
                   r.get("last_result") or r.get("result") or "-", (r.get("error") or "")[:80]) for r in rows],
                 ("host", "board", "release", "health", "last result", "error"))
