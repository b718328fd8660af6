"""Reading a tuned plan back (device side: plain JSON, no torch, no benchmark code).

``edge-sdk tune`` (``edge_sdk.measure.tune``) measures candidate plans and writes the best one beside the
bundle; ``edge_sdk.load`` reads it from here, so loading never imports the tuner.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge_sdk.bundle import Bundle
from edge_sdk.errors import EdgeSDKError, PlanError
from edge_sdk.planning.plan import Plan

TUNED_SCHEMA = 1
# Runtime options that load a shared library, import a module or read engines/caches from a path.
NATIVE_OPTIONS = frozenset({"delegates", "module", "cache_dir", "trt_cache_dir", "custom_ops", "extensions"})


def tuned_plan_path(bundle_root: str | os.PathLike, board: str) -> Path:
    """Where the tuned plan of ``bundle_root`` for ``board`` lives: a sibling of the bundle folder."""
    root = Path(bundle_root).resolve()
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in board)
    return root.parent / f"{root.name}.tuned-{safe}.json"


def _manifest_sha(bundle: Bundle) -> str:
    from edge_sdk.guard.fsutil import sha256_file

    return sha256_file(bundle.root / "manifest.json")


def load_tuned_plan(bundle: Bundle, board: str | None = None, *, required: bool = False) -> Plan | None:
    """The tuned plan stored next to ``bundle`` for ``board`` (default: the detected board).

    None when there is none or it belongs to another version of the bundle; with ``required`` those
    cases raise PlanError saying what to run.
    """
    if board is None:
        from edge_sdk.planning.board_detect import detect_board

        board, _why = detect_board()
        if board is None:
            if required:
                raise PlanError("no board profile matches this machine, so no tuned plan can be picked",
                                hint="run edge-sdk tune BUNDLE --board NAME, then load with that board")
            return None
    path = tuned_plan_path(bundle.root, board)
    if not path.is_file():
        if required:
            raise PlanError(f"bundle {bundle.name} has no tuned plan for board {board} ({path} is missing)",
                            hint=f"run: edge-sdk tune {bundle.root} --board {board}")
        return None
    from edge_sdk.guard.safeio import load_json

    try:
        doc = load_json(path, error=PlanError, what="tuned plan")
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        if doc.get("kind") != "edge-sdk-tuned-plan" or doc.get("schema") != TUNED_SCHEMA:
            raise ValueError(f"not a tuned plan of schema {TUNED_SCHEMA}")
        plan = Plan.from_json(doc["plan"])
    except (OSError, ValueError, KeyError, TypeError, PlanError) as e:
        if required:
            raise PlanError(f"tuned plan {path} cannot be read: {e}",
                            hint=f"delete it and run edge-sdk tune {bundle.root} --board {board} again") from None
        return None
    for name, cp in plan.components.items():
        # Hardening (class 3): a file beside the bundle must not make a run load native code or
        # files; options naming libraries, modules or caches come only from the caller's own flags.
        bad = sorted(set(cp.options) & NATIVE_OPTIONS) if isinstance(cp.options, dict) else ["options"]
        if bad:
            raise PlanError(f"tuned plan {path}: component {name} sets {', '.join(bad)}, which a plan file may "
                            "not set (it would load native code or files from beside the bundle)",
                            hint=f"delete it and run edge-sdk tune {bundle.root} again; pass such options yourself")
    if doc.get("manifest_sha256") != _manifest_sha(bundle):
        if required:
            raise PlanError(f"tuned plan {path} was made for another version of bundle {bundle.name}",
                            hint=f"run edge-sdk tune {bundle.root} --board {board} again")
        return None
    for name, cp in plan.components.items():  # the bundle must still have what the plan names
        try:
            bundle.artifact(name, cp.format, cp.precision, cp.variant)
        except EdgeSDKError as e:
            if required:
                raise PlanError(f"tuned plan {path}: {e.message}", hint="run edge-sdk tune again") from None
            return None
    return plan
