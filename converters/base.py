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
    """One format. ``methods`` maps each precision it makes to how (the support matrix's cells).

    A converter instance lives for one ``convert()`` run, so it may cache the fp32 export of a
    component and derive fp16 / int8 artifacts from it instead of exporting again.
    """

    format: ClassVar[str]
    methods: ClassVar[dict[str, str]]
    # The runtime (entry point name) that validates this format's artifacts.
    runtime: ClassVar[str]
    # Variants this format can make besides the general one ('' ); e.g. 'static' for NPUs.
    variants: ClassVar[tuple[str, ...]] = ()
    # Runtime options used when validating (e.g. OpenVINO: run fp32 at f32, not bf16).
    validation_options: ClassVar[dict[str, object]] = {}

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(self.methods)

    @abstractmethod
    def convert(self, component: ComponentSpec, precision: str, out_dir: Path, *,
                variant: str = "", calibration_steps: int = 20) -> ConvertedArtifact:
        """Write the artifact for ``component`` at ``precision`` into ``out_dir``."""

    def close(self) -> None:  # noqa: B027 - converters without caches hold nothing
        """Drop cached exports."""
