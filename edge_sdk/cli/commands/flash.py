"""`edge-sdk flash`: upload a package to a board over SSH and install it there."""

from __future__ import annotations

import click

from edge_sdk.cli.common import emit_json, json_option, quiet_option, say


@click.command("flash")
@click.argument("package", type=click.Path())
@click.option("--host", required=True, help="user@board (anything your ssh accepts, including Host aliases).")
@click.option("--port", type=click.IntRange(1, 65535), help="SSH port.")
@click.option("--root", default="~/edge-sdk", show_default=True, help="Install root on the board.")
@click.option("-i", "--identity", type=click.Path(), help="SSH private key (ssh -i).")
@click.option("-F", "--ssh-config", type=click.Path(), help="SSH config file (ssh -F).")
@click.option("-o", "--ssh-option", "ssh_options", multiple=True, metavar="OPTION",
              help="Extra ssh option, as for `ssh -o`, e.g. -o UserKnownHostsFile=~/.ssh/boards. Repeatable.")
@click.option("--remote-edge-sdk", default="edge-sdk", show_default=True, help="The edge-sdk command on the board.")
@click.option("--keep", type=click.IntRange(0, 100), default=2, show_default=True,
              help="Earlier releases kept on the board.")
@click.option("--verify-key", type=click.Path(), help="Check the package's signature here before uploading.")
@click.option("--remote-verify-key", help="Public key file ON THE BOARD the package must be signed with.")
@click.option("--health-check", is_flag=True, help="One short generation on the board before switching.")
@click.option("--health-steps", type=click.IntRange(1, 50), default=1, show_default=True)
@click.option("--health-timeout", type=click.FloatRange(0.01, 86400), default=120.0, show_default=True)
@click.option("--transfer", type=click.Choice(["auto", "rsync", "ssh"]), default="auto", show_default=True,
              help="rsync where both ends have it, else ssh with `cat`.")
@click.option("--bwlimit", type=click.IntRange(1), hidden=True, help="KiB/s upload limit (tests).")
@click.option("--service", is_flag=True, help="Install a systemd unit that runs the app against the current release.")
@click.option("--app", help="App command for --service; {bundle} becomes the current bundle's path.")
@click.option("--unit-dir", help="Folder for the unit on the board (default: system or user unit folder).")
@click.option("--service-start/--no-service-start", default=True, show_default=True,
              help="(Re)start the unit after writing it, where systemd runs.")
@click.option("--memory-max", help="systemd MemoryMax= for the unit, e.g. 6G.")
@click.option("--connect-timeout", type=click.IntRange(1, 600), default=15, show_default=True)
@json_option
@quiet_option
def command(package, host, port, root, identity, ssh_config, ssh_options, remote_edge_sdk, keep, verify_key,
            remote_verify_key, health_check, health_steps, health_timeout, transfer, bwlimit, service, app,
            unit_dir, service_start, memory_max, connect_timeout, as_json, quiet):
    """Upload PACKAGE to --host, install it there with `edge-sdk install`, and report what is current.

    Uses your ssh (config, agent, jump hosts, known_hosts). An interrupted upload resumes on the
    next run; the board's `current` release changes only after the new one is verified.
    """
    from edge_sdk.deploy.flash import flash

    progress = (lambda m: None) if (quiet or as_json) else (lambda m: say(f"... {m}", err=True))
    s = flash(package, host, port=port, root=root, identity=identity, ssh_config=ssh_config,
              ssh_options=list(ssh_options), remote_edge_sdk=remote_edge_sdk, keep=keep, verify_key=verify_key,
              remote_verify_key=remote_verify_key, health_check=health_check, health_steps=health_steps,
              health_timeout=health_timeout, transfer=transfer, bwlimit=bwlimit, service=service, app=app,
              unit_dir=unit_dir, service_start=service_start, memory_max=memory_max,
              connect_timeout=connect_timeout, progress=progress)
    if as_json:
        emit_json(s)
    elif not quiet:
        say(f"{host}: current -> releases/{s['release']} ({s['name']}, {s['status']})"
                   + (f", was {s['previous']}" if s["previous"] and s["previous"] != s["release"] else ""))
        say(f"sent {s['bytes_sent'] / 1e6:.2f} MB of {s['package_bytes'] / 1e6:.2f} MB by {s['transfer']}"
                   + (f", resumed at {s['resumed_from'] / 1e6:.2f} MB" if s["resumed_from"] else "")
                   + f", {s['seconds']:.1f} s")
        if s.get("service"):
            sv = s["service"]
            say(f"unit {sv['path']} written" + (", started" if sv["started"] else ", not started"))
