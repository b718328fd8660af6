"""`edge-sdk package`: a bundle + package manifest in one deterministic (optionally signed) tar."""

from __future__ import annotations

import warnings

import click

from edge_sdk.cli.common import emit_json, json_option, quiet_option, say


@click.command("package")
@click.argument("bundle", type=click.Path())
@click.option("--board", required=True, help="Board the package is for (a profile name, see `edge-sdk boards`).")
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Package file to write: NAME.tar, or NAME.tar.gz / NAME.tgz (gzip).")
@click.option("--compress/--no-compress", default=None, help="gzip the tar (default: from the -o suffix).")
@click.option("--sign-key", type=click.Path(), help="ed25519 private key (ssh-keygen -t ed25519) to sign package.json.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@json_option
@quiet_option
def command(bundle, board, output, compress, sign_key, overwrite, as_json, quiet):
    """Pack BUNDLE for --board into one file to copy or `edge-sdk flash` to the board.

    The same bundle, board and key always give the same bytes (sorted entries, fixed times and
    owners). Install it on the board with `edge-sdk install`.
    """
    from edge_sdk.deploy.package import package

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = package(bundle, board, output, compress=compress, sign_key=sign_key, overwrite=overwrite)
    for w in caught:
        say(f"warning: {w.message}", err=True)
    if as_json:
        emit_json(summary)
    elif not quiet:
        req = summary["requirements"]
        say(f"wrote {summary['package']} ({summary['size'] / 1e6:.2f} MB, {summary['files']} files"
                   f"{', signed' if summary['signed'] else ''})")
        say(f"sha256  {summary['sha256']}")
        say(f"board   {board}: needs {' or '.join(req['runtimes']) or '-'} ({req['source']})")
