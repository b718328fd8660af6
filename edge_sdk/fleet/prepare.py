"""Controller side of a fleet deploy: one plan and one package per board kind, before any host is touched.

``python -m edge_sdk.fleet.prepare BUNDLE --board rpi4-4gb --board jetson-orin-nano-8gb --out DIR`` prints
one JSON object: ``{board: {fits, package, sha256, release, name, runtimes, plan | error, hint}}``. The
deploy playbook runs it once (``run_once``, on the controller) and refuses every host whose board does
not fit before the first host is contacted. Packages are deterministic, so a second run writes the
same bytes and the hosts see the same release id (nothing to do: idempotent).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from edge_sdk.errors import DeployError, EdgeSDKError


def package_name(board: str) -> str:
    """A file name for a board's package: profile NAME, or the stem of PATH.toml, made safe."""
    stem = Path(board).name.removesuffix(".toml") if board.endswith(".toml") else board
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "board"
    return f"{safe}-{hashlib.sha256(board.encode()).hexdigest()[:8]}.tar"


def prepare_board(bundle: str | os.PathLike, board: str, out_dir: Path) -> dict[str, Any]:
    """Plan ``bundle`` for ``board`` (no measuring: the controller is not the board), then package it."""
    from edge_sdk.bundle import Bundle
    from edge_sdk.deploy.install import read_package
    from edge_sdk.deploy.package import package
    from edge_sdk.planning.planner import PlanRequest, plan, plan_summary

    try:
        p = plan(Bundle.open(bundle, verify=False), board, PlanRequest(measure=False))
    except EdgeSDKError as e:
        return {"board": board, "fits": False, "error": e.message, "hint": e.hint, "exit_code": e.exit_code}
    out = out_dir / package_name(board)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a board without a profile: package() says so in requirements
            s = package(bundle, board, out, overwrite=True)
        release = read_package(out).release_id
    except EdgeSDKError as e:
        return {"board": board, "fits": False, "error": e.message, "hint": e.hint, "exit_code": e.exit_code}
    summary = plan_summary(p)
    return {"board": board, "fits": True, "package": str(out), "sha256": s["sha256"], "size": s["size"],
            "release": release, "name": s["name"], "runtimes": s["requirements"]["runtimes"],
            "peak_bytes": summary["estimates"].get("peak"), "memory_cap_bytes": summary["memory_cap_bytes"],
            "plan": {k: f"{c['runtime']}:{c['device']} {c['format']}/{c['precision']}"
                     for k, c in summary["components"].items()}}


def prepare(bundle: str | os.PathLike, boards: list[str], out_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """prepare_board() for each distinct board, packages written under ``out_dir``."""
    from edge_sdk.bundle import Bundle

    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    Bundle.open(bundle, verify=True)  # a bundle that fails its own hashes is refused for every board
    return {b: prepare_board(bundle, b, out) for b in dict.fromkeys(boards)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m edge_sdk.fleet.prepare")
    ap.add_argument("bundle")
    ap.add_argument("--board", action="append", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    os.environ.setdefault("EDGE_SDK_NO_PROGRESS", "1")
    try:
        result = prepare(a.bundle, a.board, a.out)
    except EdgeSDKError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"  hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        err = DeployError(f"cannot prepare packages in {a.out}: {e}")
        print(f"error: {err.message}", file=sys.stderr)
        return err.exit_code
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
