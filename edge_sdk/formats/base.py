"""What edge-sdk knows about one model file format, in one small record."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class FormatSpec:
    """A format's facts. The runtimes that open it say so themselves (``Runtime.formats``)."""

    name: str  # as written in manifests, board profiles and --format
    suffix: str  # the artifact's entry file, e.g. ".onnx"
    # Structure check before native code parses a file (raises ModelFileError/UnsafePathError);
    # cheap and pure Python, so a truncated or hostile file never reaches the engine.
    check: Callable[[str | os.PathLike], None]
    converter: str  # "module:Class" of the converter that writes it (host side, imported on demand)
    aliases: tuple[str, ...] = ()  # other spellings accepted by --format
    rank: int = 100  # lower first where nothing else decides (convert's default format, bench's reference)
