"""Helpers for the hardening tests: re-sealing a bundle after changing it on purpose.

A bad model file inside a bundle is normally caught by the sha256 check; to reach the checks
that stand in front of the runtimes (``edge_sdk.guard.modelcheck``) the tests re-seal the manifest, as
an attacker who controls the whole bundle would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_sdk.guard.fsutil import sha256_file


def reseal(root: Path, *, add: dict[str, list[str]] | None = None) -> None:
    """Recompute size+sha256 of every file the manifest lists; ``add`` {component: [relpath]}
    appends files to that component's first artifact first."""
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    for comp, rels in (add or {}).items():
        files = data["components"][comp]["artifacts"][0]["files"]
        files.extend({"path": r, "sha256": "0" * 64, "size": 0} for r in rels)
    for comp in data["components"].values():
        for art in comp["artifacts"]:
            for f in art["files"]:
                p = root / f["path"]
                f["size"], f["sha256"] = p.stat().st_size, sha256_file(p)
    path.write_text(json.dumps(data, indent=2))


def edit_manifest(root: Path, fn: Callable[[dict], object]) -> None:
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="session")
def helpers():
    class H:
        pass

    h = H()
    h.reseal = reseal
    h.edit_manifest = edit_manifest
    return h


# -- the counts table (tests/hardening/counts.py, test_counts.py) ---------------------------------
ALL_ITEMS = pytest.StashKey[list]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    """Remember every hardening item before -m/-k deselect any, for test_counts.py."""
    here = Path(__file__).parent
    config.stash[ALL_ITEMS] = [i.nodeid for i in items if Path(str(i.path)).parent == here]


@pytest.fixture
def hardening_items(request) -> list[str]:
    """Node ids of every hardening test this session collected (before deselection)."""
    return request.config.stash.get(ALL_ITEMS, [])
