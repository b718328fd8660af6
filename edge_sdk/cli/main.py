"""Entry point: the `edge-sdk` group, with every module in ``edge_sdk.cli.commands`` attached."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

import click

from edge_sdk import __version__
from edge_sdk.cli import commands as _commands
from edge_sdk.cli.common import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edge-sdk")
def cli() -> None:
    """edge-sdk: put generative models (diffusion, VAE, GAN) on edge boards.

    \b
    Typical flow:
      edge-sdk convert pkg.module:factory -o model.bundle      (workstation)
      edge-sdk plan model.bundle --board rpi5-8gb --size 512x512
      edge-sdk run model.bundle --steps 8 --seed 0 --out out.png

    Try it first with edge-sdk's own trained model: edge-sdk demo --out demo.png
    """


for _info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda m: m.name):
    _mod = importlib.import_module(f"{_commands.__name__}.{_info.name}")
    if hasattr(_mod, "command"):
        cli.add_command(_mod.command)


def main(argv: list[str] | None = None) -> None:
    code = run_cli(cli, argv)
    watch = sys.modules.get("edge_sdk.runtimes.watch")
    if watch is not None and watch.runaway_calls():
        # A model call its engine cannot stop (OpenVINO inside a Loop, LiteRT) is still computing in a
        # thread: the error is printed, nothing was written; end now rather than wait on it at exit.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
