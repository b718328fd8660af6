"""The "ronnx" converter (host side): the ONNX converter's artifact, its entry renamed to .ronnx."""

from __future__ import annotations

from pathlib import Path

from edge_sdk.converters.base import ConvertedArtifact
from edge_sdk.converters.onnx import OnnxConverter


class RenamedOnnxConverter(OnnxConverter):
    format = "ronnx"

    def convert(self, component, precision, out_dir, *, variant="", calibration_steps=20) -> ConvertedArtifact:
        art = super().convert(component, precision, out_dir, variant=variant, calibration_steps=calibration_steps)
        entry = Path(art.entry).with_suffix(".ronnx")
        Path(art.entry).rename(entry)
        files = [entry if Path(f) == Path(art.entry) else Path(f) for f in art.files]
        return ConvertedArtifact(entry=entry, files=files, static_shapes=art.static_shapes,
                                 notes=[*art.notes, "ONNX bytes renamed to .ronnx"])
