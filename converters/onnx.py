"""ONNX export: the dynamo exporter (onnxscript) first, TorchScript export as the fallback.

fp16 and int8 artifacts are derived from one fp32 export per component (``quantize_onnx.py``).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from edge_sdk.converters.base import ConvertedArtifact, Converter
from edge_sdk.converters.precision import check_supported
from edge_sdk.converters.spec import ComponentSpec
from edge_sdk.converters.unsupported import conversion_failure, first_line
from edge_sdk.errors import ConversionError, UnsupportedOpError
from edge_sdk.guard import interrupt

log = logging.getLogger(__name__)
# Protobuf's hard limit; larger models keep their weights as external data.
_PROTO_LIMIT = 2 * 1024**3 - 1


def export_onnx(component: ComponentSpec, path: Path) -> list[str]:
    """Export ``component`` to ``path`` (fp32), check it and infer shapes; returns notes."""
    import onnx

    module = component.module.eval()
    names = list(component.example_inputs)
    args = _batch_two(component)
    notes: list[str] = []
    # String names become the ONNX dim_params ('batch', 'height'); equal names mean equal sizes.
    # By position: a dict must be keyed by the forward's parameter names, which wrappers do not share.
    dyn = tuple(dict(component.dynamic_dims[n]) if component.dynamic_dims.get(n) else None for n in names)
    large = sum(p.numel() * p.element_size() for p in module.parameters()) > _PROTO_LIMIT // 2
    try:
        prog = torch.onnx.export(module, args, dynamo=True, input_names=names,
                                 output_names=component.output_names, dynamic_shapes=dyn,
                                 external_data=large, verbose=False, optimize=True)
        prog.save(str(path), external_data=large)
    except Exception as e:  # the dynamo exporter raises many types; fall back once, say so
        interrupt.check()  # a Ctrl-C the exporter wrapped in its own error is not an export failure
        first = first_line(e)
        log.warning("dynamo ONNX export failed for %s (%s); falling back to the TorchScript exporter",
                    component.role, first)
        notes.append(f"dynamo exporter failed ({first}); used TorchScript exporter")
        axes = {n: dict(component.dynamic_dims.get(n, {})) for n in names}
        axes.update({n: dict(d) for n, d in component.output_dynamic_dims.items()})
        for p in path.parent.iterdir():
            p.unlink()
        try:
            torch.onnx.export(module, args, str(path), dynamo=False, input_names=names,
                              output_names=component.output_names, dynamic_axes=axes, opset_version=18)
        except Exception as e2:
            interrupt.check()
            err = conversion_failure(e, role=component.role, fmt="onnx", stage="export", component=component)
            if not isinstance(err, UnsupportedOpError):
                err = conversion_failure(e2, role=component.role, fmt="onnx", stage="export", component=component)
            if isinstance(err, UnsupportedOpError):
                raise err from None
            raise ConversionError(f"{component.role}: ONNX export failed with both exporters: {first_line(e2)}",
                                  hint=f"dynamo exporter said: {first}") from None
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise ConversionError(f"{component.role}: exported ONNX fails onnx.checker: {first_line(e)}") from None
    try:
        # In place: value_info for every intermediate helps later tools (quantizer, TensorRT).
        onnx.shape_inference.infer_shapes_path(str(path), str(path))
    except Exception as e:  # noqa: BLE001 - inference is best effort on custom-domain functions
        notes.append(f"ONNX shape inference incomplete: {first_line(e)}")
    return notes


def _batch_two(component: ComponentSpec) -> tuple[torch.Tensor, ...]:
    """The example inputs with a dynamic batch of 1 repeated to 2.

    torch.export specialises a dimension of size 1 (diffusers' ``timestep.expand(batch)`` makes the
    guard), and the dynamo exporter then refuses the dynamic 'batch'; 2 keeps it symbolic.
    """
    ex = component.example_inputs
    batched = [n for n, t in ex.items() if component.dynamic_dims.get(n, {}).get(0) == "batch"]
    if not batched or any(ex[n].shape[0] != 1 for n in batched):
        return tuple(ex.values())
    return tuple(t.repeat(2, *([1] * (t.ndim - 1))) if n in batched else t for n, t in ex.items())


class OnnxConverter(Converter):
    format = "onnx"
    methods = {
        "fp32": "torch.onnx dynamo export (TorchScript fallback), onnx.checker + shape inference",
        "fp16": "onnxruntime.transformers.float16, float32 inputs/outputs kept",
        "int8-weight": "int8 per-channel Conv/MatMul/Gemm weights behind DequantizeLinear",
        "int8-static": "onnxruntime quantize_static, QDQ U8/S8 per-channel, trajectory calibration",
    }

    def __init__(self) -> None:
        self._work = Path(tempfile.mkdtemp(prefix="edge-sdk-onnx-"))
        self._fp32: dict[int, tuple[Path, list[str]] | ConversionError] = {}

    def _base(self, component: ComponentSpec) -> tuple[Path, list[str]]:
        key = id(component)
        if key not in self._fp32:
            d = self._work / f"{component.role}-{len(self._fp32)}"
            d.mkdir()
            path = d / "model.onnx"
            try:
                self._fp32[key] = (path, export_onnx(component, path))
            except ConversionError as e:
                self._fp32[key] = e  # the other precisions fail the same way; do not export again
        if isinstance(self._fp32[key], ConversionError):
            raise self._fp32[key]
        return self._fp32[key]

    def convert(self, component: ComponentSpec, precision: str, out_dir: Path, *, variant: str = "",
                calibration_steps: int = 20) -> ConvertedArtifact:
        check_supported(self.format, precision)
        if variant:
            raise ConversionError(f"the onnx converter makes no {variant!r} variant",
                                  hint="static-shape variants are made for openvino")
        from edge_sdk.converters import quantize_onnx

        out_dir = Path(out_dir)
        base, notes = self._base(component)
        dst = out_dir / "model.onnx"
        try:
            if precision == "fp32":
                for f in base.parent.iterdir():
                    shutil.copyfile(f, out_dir / f.name)
            elif precision == "fp16":
                quantize_onnx.to_fp16(base, dst)
            elif precision == "int8-weight":
                n = quantize_onnx.to_int8_weight(base, dst)
                notes = notes + [f"{n} weight tensors in int8"]
            else:
                feeds = [{k: v.numpy().astype(_np_dtype(component.example_inputs[k])) for k, v in d.items()}
                         for d in component.calibration_inputs(calibration_steps)]
                work = self._work / f"q-{component.role}"
                work.mkdir(exist_ok=True)
                quantize_onnx.to_int8_static(base, dst, feeds, work_dir=work)
                notes = notes + [f"calibrated on {len(feeds)} inputs from a {calibration_steps}-step trajectory"]
        except (ConversionError, UnsupportedOpError):
            raise
        except Exception as e:  # noqa: BLE001 - onnxruntime tools raise plain Exceptions
            raise conversion_failure(e, role=component.role, fmt=self.format, stage=precision) from None
        files = sorted(p for p in out_dir.iterdir() if p.is_file())
        return ConvertedArtifact(entry=dst, files=files, notes=notes)

    def close(self) -> None:
        shutil.rmtree(self._work, ignore_errors=True)


def _np_dtype(t: torch.Tensor) -> np.dtype:
    return np.dtype(str(t.dtype).replace("torch.", ""))
