"""docs/hardening.md's counts table is computed from the tests (tests/hardening/counts.py), not typed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _counts():
    spec = importlib.util.spec_from_file_location("edge_hardening_counts", HERE / "counts.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_docs_counts_are_current(hardening_items):
    files = {i.split("::")[0].rsplit("/", 1)[-1] for i in hardening_items}
    if files != {p.name for p in HERE.glob("test_*.py")}:
        pytest.skip("run all of tests/hardening to check the counts table (this run collected a part)")
    counts = _counts()
    assert counts.table(hardening_items) == counts.doc_table(), "run `python tests/hardening/counts.py --write`"
