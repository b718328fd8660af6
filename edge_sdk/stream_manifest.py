"""A component's ``stream`` section: its parts in order, checked for what a JSON schema cannot say.

A streamed component is run as a chain of sub-graphs (``edge_sdk.pipelines.streamed``). Its
manifest section lists the parts in the order they run; each part names its input and output
tensors and has artifacts like a component's. Loading refuses, with one error naming the part
and the tensor: a part that takes a tensor only a later part makes (parts out of order), a tensor
nobody makes (dangling), a tensor made twice, a component output no part makes, parts whose
formats/precisions differ, and (through the shared artifact check) paths outside the bundle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge_sdk.errors import ManifestError


def check_stream(comp: dict[str, Any], *, where: str,
                 check_artifacts: Callable[[list[dict[str, Any]], str], None]) -> None:
    """Raise ManifestError on the first inconsistency of ``comp['stream']`` (schema already checked)."""
    parts = comp["stream"]["parts"]
    names = [p["name"] for p in parts]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ManifestError(f"{where}: part name {dup!r} is used twice", hint="convert the model again")
    producer = {}  # tensor -> index of the part that makes it
    for i, part in enumerate(parts):
        for t in part["outputs"]:
            if t["name"] in producer:
                raise ManifestError(f"{where}/parts/{i}: tensor {t['name']!r} is made by parts "
                                    f"{parts[producer[t['name']]]['name']!r} and {part['name']!r}",
                                    hint="the bundle was altered or built by hand; convert it again")
            producer[t["name"]] = i
    available = {t["name"] for t in comp["inputs"]}
    clash = available & set(producer)
    if clash:
        raise ManifestError(f"{where}: tensor {sorted(clash)[0]!r} is both a component input and a part's output")
    for i, part in enumerate(parts):
        for t in part["inputs"]:
            name = t["name"]
            if name in available:
                continue
            if name in producer:
                later = parts[producer[name]]["name"]
                raise ManifestError(
                    f"{where}/parts/{i}: parts out of order: part {part['name']!r} (#{i}) takes {name!r}, which "
                    f"part {later!r} (#{producer[name]}) makes later",
                    hint="the bundle was altered or built by hand; convert it again")
            raise ManifestError(f"{where}/parts/{i}: part {part['name']!r} takes {name!r}, which neither the "
                                "component's inputs nor any part provide (a dangling tensor name)",
                                hint="the bundle was altered or built by hand; convert it again")
        available |= {t["name"] for t in part["outputs"]}
    last = {t["name"] for t in parts[-1]["outputs"]}
    for t in comp["outputs"]:
        if t["name"] not in last:
            raise ManifestError(f"{where}: the component's output {t['name']!r} is not made by the last part "
                                f"({parts[-1]['name']!r})", hint="convert the model again")
    keys0 = None
    for i, part in enumerate(parts):
        check_artifacts(part["artifacts"], f"{where}/parts/{i}/artifacts")
        keys = {(a["format"], a["precision"]) for a in part["artifacts"]}
        if any(a.get("variant") for a in part["artifacts"]):
            raise ManifestError(f"{where}/parts/{i}: a part's artifacts have no variant")
        if keys0 is None:
            keys0 = keys
        elif keys != keys0:
            missing = sorted(keys0 ^ keys)[0]
            raise ManifestError(f"{where}/parts/{i}: part {part['name']!r} and part {parts[0]['name']!r} differ in "
                                f"their artifacts ({missing[0]}/{missing[1]})",
                                hint="every part needs the same formats and precisions; convert it again")
