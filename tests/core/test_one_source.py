"""Names and units defined once: the precision list and the MB constant."""

from __future__ import annotations

import re
from pathlib import Path

from edge_sdk.manifest import schema
from edge_sdk.planning.plan import PRECISION_ORDER

REPO = Path(__file__).resolve().parents[2]


def test_the_manifest_schema_lists_exactly_the_precisions_of_the_one_list():
    found = []

    def walk(node):  # the precision enum, wherever the schema nests it
        if isinstance(node, dict):
            if isinstance(node.get("precision"), dict) and "enum" in node["precision"]:
                found.append(node["precision"]["enum"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema())
    assert found == [list(PRECISION_ORDER)] and "int8" not in PRECISION_ORDER  # the legacy name is gone


def test_mb_is_defined_once():
    defines = re.compile(r"^MB\s*(:[^=]*)?=", re.MULTILINE)  # a module-level MB = ... (text: parsing is slow)
    owners = sorted(str(path.relative_to(REPO)) for folder in ("edge_sdk", "runtimes", "converters")
                    for path in (REPO / folder).rglob("*.py") if defines.search(path.read_text()))
    assert owners == ["edge_sdk/units.py"]
