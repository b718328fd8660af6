"""`edge-sdk install`: verify a package and make it the current release on this device."""

from __future__ import annotations

import click

from edge_sdk.cli.common import emit_json, json_option, quiet_option, say


@click.command("install")
@click.argument("package", type=click.Path())
@click.option("--root", default="~/edge-sdk", show_default=True, help="Install root (releases/, current, state.json).")
@click.option("--keep", type=click.IntRange(0, 100), default=2, show_default=True,
              help="Earlier releases to keep for rollback.")
@click.option("--verify-key", type=click.Path(), help="ed25519 public key the package must be signed with.")
@click.option("--expect-sha256", help="Refuse the package file unless its sha256 is this (used by flash).")
@click.option("--health-check", is_flag=True,
              help="Run one short generation before switching; failing keeps the old release.")
@click.option("--health-steps", type=click.IntRange(1, 50), default=1, show_default=True)
@click.option("--health-timeout", type=click.FloatRange(0.01, 86400), default=120.0, show_default=True,
              help="Seconds the health check may take.")
@click.option("--no-runtime-check", is_flag=True,
              help="Install even if none of the package's runtimes is installed here.")
@json_option
@quiet_option
def command(package, root, keep, verify_key, expect_sha256, health_check, health_steps, health_timeout,
            no_runtime_check, as_json, quiet):
    """Install PACKAGE (from `edge-sdk package`) under --root and switch `current` to it atomically."""
    from edge_sdk.deploy.install import install

    s = install(package, root, keep=keep, verify_key=verify_key, expect_sha256=expect_sha256,
                health_check=health_check, health_steps=health_steps, health_timeout=health_timeout,
                check_runtimes=not no_runtime_check)
    if as_json:
        emit_json(s)
    elif not quiet:
        if s["status"] == "already-current":
            say(f"release {s['release']} ({s['name']}) is already current under {s['root']}")
        else:
            say(f"installed {s['name']} as release {s['release']}; current -> releases/{s['release']}"
                       + (f" (was {s['previous']})" if s["previous"] else ""))
        if s.get("health"):
            say(f"health check passed in {s['health']['seconds']:.2f} s")
