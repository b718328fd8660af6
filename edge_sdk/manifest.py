"""manifest.json, schema version 1: loading, validating and small typed views over it.

The schema is ``edge_sdk/schemas/manifest.schema.json`` (documented in docs/manifest.md). Loading
checks, in order: size, JSON syntax, the JSON schema, then what a schema cannot say (unique file
paths, safe paths, an entry listed among its artifact's files, roles matching component names).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from itertools import islice
from pathlib import Path
from typing import Any

from edge_sdk.errors import ManifestError
from edge_sdk.guard.paths import check_relpath

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
# A manifest is metadata; anything this large is a mistake or an attack.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_SCHEMA_ERRORS = 20


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    text = resources.files("edge_sdk").joinpath("schemas/manifest.schema.json").read_text()
    return json.loads(text)


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    cls = jsonschema.validators.validator_for(schema())
    return cls(schema())


def _where(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    return "/".join(parts) if parts else "(top level)"


def validate(data: Any, *, source: str = MANIFEST_NAME) -> dict[str, Any]:
    """Validate a parsed manifest; raise ManifestError naming the first bad field."""
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: the manifest must be a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION and isinstance(version, int) and not isinstance(version, bool):
        raise ManifestError(
            f"{source}: schema_version {version} is not supported (this edge-sdk reads {SCHEMA_VERSION})",
            hint="convert the model again with this edge-sdk, or upgrade edge-sdk",
        )
    # A schema-error bomb (a manifest with millions of bad entries) must not build millions of
    # error objects: stop after MAX_SCHEMA_ERRORS and report the first, by depth.
    errors = sorted(islice(_validator().iter_errors(data), MAX_SCHEMA_ERRORS),
                    key=lambda e: (len(list(e.absolute_path)), e.message))
    if errors:
        e = errors[0]
        msg = e.message if len(e.message) < 300 else e.message[:300] + "..."
        count = f"{len(errors)}" if len(errors) < MAX_SCHEMA_ERRORS else f"at least {MAX_SCHEMA_ERRORS}"
        raise ManifestError(f"{source}: field {_where(e)}: {msg}",
                            hint=f"{count} schema error(s); see docs/manifest.md")
    seen: set[str] = set()
    for cname, comp in data["components"].items():
        if comp["role"] != cname:
            raise ManifestError(f"{source}: component {cname!r} has role {comp['role']!r}; they must match")
        _check_artifacts(comp["artifacts"], f"{source}: components/{cname}/artifacts")
        if "stream" in comp:
            from edge_sdk.stream_manifest import check_stream

            check_stream(comp, where=f"{source}: components/{cname}/stream", check_artifacts=_check_artifacts)
        for f in comp.get("extra_files", []):
            check_relpath(f["path"], where=f"{source}: components/{cname}/extra_files")
        for f in all_files_of_component(comp):
            if f["path"] in seen:
                raise ManifestError(f"{source}: file {f['path']!r} is listed twice")
            seen.add(f["path"])
    return data


def _check_artifacts(artifacts: list[dict[str, Any]], where_base: str) -> None:
    keys = set()
    for i, art in enumerate(artifacts):
        where = f"{where_base}/{i}"
        key = (art["format"], art["precision"], art.get("variant", ""))
        if key in keys:
            raise ManifestError(f"{where}: duplicate artifact {key}")
        keys.add(key)
        paths = [f["path"] for f in art["files"]]
        if art["entry"] not in paths:
            raise ManifestError(f"{where}: entry {art['entry']!r} is not among the artifact's files")
        for p in paths:
            check_relpath(p, where=where)


def all_artifacts_of_component(comp: dict[str, Any]) -> list[dict[str, Any]]:
    """The component's artifacts and those of its stream parts (every model file the bundle holds)."""
    parts = comp.get("stream", {}).get("parts", [])
    return list(comp["artifacts"]) + [a for part in parts for a in part["artifacts"]]


def all_files_of_component(comp: dict[str, Any]) -> list[dict[str, Any]]:
    files = [f for art in all_artifacts_of_component(comp) for f in art["files"]]
    return files + list(comp.get("extra_files", []))


def all_files(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for comp in data["components"].values() for f in all_files_of_component(comp)]


def load(path: Path) -> dict[str, Any]:
    """Read and validate ``path`` (a manifest.json): regular file, no link, size cap, strict JSON."""
    from edge_sdk.guard.safeio import loads_json, read_regular

    path = Path(path)
    if not os.path.lexists(path):
        raise ManifestError(f"{path}: no manifest.json here", hint="is this an edge-sdk bundle folder?")
    raw = read_regular(path, max_bytes=MAX_MANIFEST_BYTES, error=ManifestError, what="manifest")
    data = loads_json(raw, source=str(path), error=ManifestError)
    return validate(data, source=str(path))


@dataclass(frozen=True)
class TensorSpec:
    """A named input or output: dtype and shape, dims either ints or dynamic names."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(d["name"], d["dtype"], tuple(d["shape"]))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
