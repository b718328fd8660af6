"""ONNX export: the dynamo exporter (onnxscript) first, TorchScript export as the fallback."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from edge_sdk.converters.base import ConvertedArtifact, Converter
from edge_sdk.converters.spec import ComponentSpec
from edge_sdk.errors import ConversionError, UsageError

log = logging.getLogger(__name__)
# Protobuf's hard limit; larger models keep their weights as external data.
_PROTO_LIMIT = 2 * 1024**3 - 1


def export_onnx(component: ComponentSpec, path: Path) -> list[str]:
    """Export ``component`` to ``path`` (fp32); returns notes (e.g. that the fallback was used)."""
    import onnx

    module = component.module.eval()
    args = tuple(component.example_inputs.values())
    names = list(component.example_inputs)
    notes: list[str] = []
    # String names become the ONNX dim_params ('batch', 'height'); equal names mean equal sizes.
    dyn = {n: dict(component.dynamic_dims[n]) if component.dynamic_dims.get(n) else None for n in names}
    large = sum(p.numel() * p.element_size() for p in module.parameters()) > _PROTO_LIMIT // 2
    try:
        prog = torch.onnx.export(module, args, dynamo=True, input_names=names,
                                 output_names=component.output_names, dynamic_shapes=dyn,
                                 external_data=large, verbose=False, optimize=True)
        prog.save(str(path), external_data=large)
    except Exception as e:  # the dynamo exporter raises many types; fall back once, say so
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        log.warning("dynamo ONNX export failed for %s (%s); falling back to the TorchScript exporter",
                    component.role, first)
        notes.append(f"dynamo exporter failed ({first}); used TorchScript exporter")
        axes = {n: dict(component.dynamic_dims.get(n, {})) for n in names}
        axes.update({n: dict(d) for n, d in component.output_dynamic_dims.items()})
        try:
            torch.onnx.export(module, args, str(path), dynamo=False, input_names=names,
                              output_names=component.output_names, dynamic_axes=axes, opset_version=17)
        except Exception as e2:
            raise ConversionError(f"{component.role}: ONNX export failed with both exporters: {e2}".splitlines()[0],
                                  hint=f"dynamo exporter said: {first}") from None
    model = onnx.load(str(path), load_external_data=False)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise ConversionError(f"{component.role}: exported ONNX fails onnx.checker: {str(e).splitlines()[0]}") from None
    del model
    return notes


class OnnxConverter(Converter):
    format = "onnx"
    precisions = ("fp32",)
    runtime = "onnxruntime"

    def convert(self, component: ComponentSpec, precision: str, out_dir: Path, *, variant: str = "") -> ConvertedArtifact:
        if precision not in self.precisions:
            raise UsageError(f"the ONNX converter cannot make {precision} yet", hint=f"it makes: {', '.join(self.precisions)}")
        path = Path(out_dir) / "model.onnx"
        notes = export_onnx(component, path)
        files = [Path(out_dir) / f for f in os.listdir(out_dir)]
        return ConvertedArtifact(entry=path, files=files, notes=notes)
