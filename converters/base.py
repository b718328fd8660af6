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
    # The runtime (entry point name) that validates this format's artifacts; None: the preferred
    # runtime that opens the format (``validating_runtime``).
    runtime: ClassVar[str | None] = None
    # Variants this format can make besides the general one ('' ); e.g. 'static' for NPUs.
    variants: ClassVar[tuple[str, ...]] = ()
    @classmethod
    def validating_runtime(cls) -> str:
        from edge_sdk.errors import RuntimeUnavailableError
        from edge_sdk.runtimes.registry import runtimes_for_format

        if cls.runtime:
            return cls.runtime
        names = runtimes_for_format(cls.format)
        if not names:
            raise RuntimeUnavailableError(f"no runtime opens format {cls.format!r}, so its artifacts cannot be "
                                          "validated", hint="install the package that provides a runtime for it")
        return names[0]

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
