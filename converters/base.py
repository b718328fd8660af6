"""The converter interface: one format, several precisions, one artifact folder per call."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from edge_sdk.converters.spec import ComponentSpec


@dataclass
class ConvertedArtifact:
    entry: Path
    files: list[Path]
    static_shapes: dict[str, list[int]] | None = None
    notes: list[str] = field(default_factory=list)


class Converter(ABC):
    format: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    # The runtime (entry point name) that validates this format's artifacts.
    runtime: ClassVar[str]

    @abstractmethod
    def convert(self, component: ComponentSpec, precision: str, out_dir: Path, *,
                variant: str = "") -> ConvertedArtifact:
        """Write the artifact for ``component`` at ``precision`` into ``out_dir``."""
