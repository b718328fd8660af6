"""Which weight files of a diffusers/transformers component folder to load, as the hub lays them out.

``save_pretrained`` writes ``<stem>.safetensors`` (or ``.bin``), ``<stem>.<variant>.safetensors``
for a variant (``fp16``, ``ema``, ...), and for sharded weights ``<stem>[.<variant>]-00001-of-0000N``
files plus ``<stem>.safetensors.index[.<variant>].json``. diffusers and transformers load all of
these given the variant; this module finds the variant (picked automatically when it is the only
weights present) and checks an index names only shard files that sit in the folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from edge_sdk.errors import ModelSourceError

_EXT = r"(?:safetensors|bin)"
_PLAIN = [re.compile(rf"^[^.]+\.{_EXT}$"), re.compile(rf"^[^.]+-\d+-of-\d+\.{_EXT}$"),
          re.compile(rf"^[^.]+\.{_EXT}\.index\.json$")]
_VARIANT = [re.compile(rf"^[^.]+\.(?P<v>[A-Za-z0-9_]+)\.{_EXT}$"),
            re.compile(rf"^[^.]+\.(?P<v>[A-Za-z0-9_]+)-\d+-of-\d+\.{_EXT}$"),
            re.compile(rf"^[^.]+\.{_EXT}\.index\.(?P<v>[A-Za-z0-9_]+)\.json$")]
MAX_INDEX_BYTES = 64 * 1024 * 1024


def variants_in(folder: Path) -> tuple[bool, set[str]]:
    """(has weights without a variant, the variants present)."""
    plain, found = False, set()
    for p in folder.iterdir():
        if not p.is_file():
            continue
        if any(r.match(p.name) for r in _PLAIN):
            plain = True
            continue
        for r in _VARIANT:
            m = r.match(p.name)
            if m:
                found.add(m.group("v"))
                break
    return plain, found


def pick_variant(folder: Path, requested: str | None, what: str) -> str | None:
    """The variant to load ``folder`` with: ``requested`` if present; else none when plain weights
    exist; else the only variant there is. One ModelSourceError otherwise."""
    plain, found = variants_in(folder)
    if requested:
        if requested in found:
            return requested
        if not found and plain:
            return None  # this component ships one set of weights; --variant applies to the others
        raise ModelSourceError(
            f"the {what} ({folder}) has no {requested!r} weights",
            hint=f"it has: {', '.join(sorted(found)) or 'none'}{' and plain weights' if plain else ''}")
    if plain:
        return None
    if len(found) == 1:
        return next(iter(found))
    if found:
        raise ModelSourceError(f"the {what} ({folder}) has several weight variants: {', '.join(sorted(found))}",
                               hint="pick one with --variant")
    raise ModelSourceError(f"{folder} holds no weights (*.safetensors or *.bin) for the {what}",
                           hint="save the model with save_pretrained(..., safe_serialization=True)")


def check_indexes(folder: Path) -> None:
    """Every ``*.index*.json`` names shard files by plain name, each present in ``folder``."""
    for idx in folder.glob("*.index*.json"):
        if idx.stat().st_size > MAX_INDEX_BYTES:
            raise ModelSourceError(f"{idx}: {idx.stat().st_size} bytes, too large for a shard index")
        try:
            data = json.loads(idx.read_text())
            weight_map = data["weight_map"]
            files = set(weight_map.values())
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            raise ModelSourceError(f"{idx}: not a shard index (a JSON object with a weight_map)",
                                   hint="save the model again with save_pretrained(max_shard_size=...)") from None
        for f in files:
            if not isinstance(f, str) or "/" in f or "\\" in f or f in ("", ".", ".."):
                raise ModelSourceError(f"{idx}: weight_map names {f!r}, not a file name in the folder",
                                       hint="an index may only name shards beside it")
            if not (folder / f).is_file() or (folder / f).is_symlink():
                raise ModelSourceError(f"{idx}: shard {f} is missing",
                                       hint="the download is incomplete; fetch every shard again")
