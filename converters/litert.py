"""TFLite / LiteRT (.tflite) with litert-torch; fp16 and int8 through ai-edge-quantizer.

TFLite graphs here have fixed shapes (the example inputs'): XNNPACK and the NPU delegates plan
memory per shape, so the artifact records ``static_shapes``. 64-bit integer inputs become int32
(LiteRT's default without x64), which the pipeline handles by casting to the reported dtype.
"""

from __future__ import annotations

import keyword
import os
from pathlib import Path

from torch import nn

from edge_sdk.converters.base import ConvertedArtifact, Converter
from edge_sdk.converters.precision import check_supported
from edge_sdk.converters.quiet import quiet_exporters
from edge_sdk.converters.spec import ComponentSpec
from edge_sdk.converters.unsupported import conversion_failure
from edge_sdk.errors import ConversionError

SIGNATURE = "serving_default"


def _named_inputs(module: nn.Module, names: list[str]) -> nn.Module:
    """``module`` behind a forward whose parameters carry our input names (the signature's names)."""
    if not all(n.isidentifier() and not keyword.iskeyword(n) for n in names):
        raise ConversionError(f"input names {names} are not all Python identifiers",
                              hint="name the example inputs like 'sample', 'timestep'")
    args = ", ".join(names)
    ns: dict = {}
    exec(f"def forward(self, {args}):\n    return self.inner({args})\n", ns)  # noqa: S102 - names checked above
    wrapper = type("NamedInputs", (nn.Module,), {"forward": ns["forward"]})()
    wrapper.inner = module
    return wrapper.eval()


def to_tflite(component: ComponentSpec) -> bytes:
    import litert_torch

    try:
        with quiet_exporters():
            # Keyword inputs name the signature's inputs after ours ('sample', 'timestep', ...).
            module = _named_inputs(component.module.eval(), list(component.example_inputs))
            model = litert_torch.convert(module, sample_kwargs=dict(component.example_inputs))
            return bytes(model.model_content())
    except Exception as e:  # noqa: BLE001 - lowering errors come from torch.export, MLIR and the converter
        raise conversion_failure(e, role=component.role, fmt="tflite", stage="litert_torch.convert",
                                 component=component) from None


_INT8_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D_TRANSPOSE", "FULLY_CONNECTED", "BATCH_MATMUL")


def _recipe(precision: str, keep_float: list[str]):
    import re

    from ai_edge_quantizer import qtyping, recipe, recipe_manager

    if precision == "int8-weight":
        return recipe.weight_only_wi8_afp32()
    if precision == "int8-static":
        rm = recipe_manager.RecipeManager()
        # The compute-heavy ops only, as onnxruntime's QDQ does: int8 inside a GroupNorm's mean and
        # variance (MEAN/SUB/MUL) measured 0.31 relative L2 on a tiny UNet, against 0.03 without.
        for op in _INT8_OPS:
            rm.add_static_config(regex=".*", operation_name=getattr(qtyping.TFLOperationName, op),
                                 activation_num_bits=8, weight_num_bits=8)
        # Float inputs and outputs (quantize/dequantize inside), so the pipeline feeds the same arrays.
        for io in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            rm.add_quantization_config(regex=".*", operation_name=io, algorithm_key="no_quantize")
        if keep_float:  # the timestep embedding stays float (precision_guard.py)
            rm.add_quantization_config(regex="^(?:" + "|".join(re.escape(n) for n in keep_float) + ");$",
                                       operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                       algorithm_key="no_quantize")
        return rm.get_quantization_recipe()
    rm = recipe_manager.RecipeManager()
    rm.add_quantization_config(
        regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        op_config=qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
            compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True),
        algorithm_key=qtyping.AlgorithmName.FLOAT_CASTING if hasattr(qtyping, "AlgorithmName") else "float_casting")
    return rm.get_quantization_recipe()


def quantize_tflite(float_model: bytes, precision: str, calibration: list[dict] | None = None) -> bytes:
    from ai_edge_quantizer import quantizer

    from edge_sdk.converters.precision_guard import tflite_timestep_tensors

    q = quantizer.Quantizer(bytearray(float_model), _recipe(precision, tflite_timestep_tensors(float_model)))
    with quiet_exporters():
        result_cal = None
        if q.need_calibration:
            result_cal = q.calibrate({SIGNATURE: calibration or []}, num_threads=max(1, (os.cpu_count() or 2) // 2))
        res = q.quantize(result_cal, enable_progress_report=False)
    return bytes(res.quantized_model)


class LiteRtConverter(Converter):
    format = "tflite"
    methods = {
        "fp32": "litert_torch.convert, fixed shapes",
        "fp16": "ai-edge-quantizer float casting (fp16 weights, float compute)",
        "int8-weight": "ai-edge-quantizer weight_only_wi8_afp32",
        "int8-static": "ai-edge-quantizer static_wi8_ai8 on trajectory calibration inputs",
    }

    def __init__(self) -> None:
        self._float: dict[int, bytes | ConversionError] = {}

    def convert(self, component: ComponentSpec, precision: str, out_dir: Path, *, variant: str = "",
                calibration_steps: int = 20) -> ConvertedArtifact:
        check_supported(self.format, precision)
        if variant:
            raise ConversionError(f"the tflite converter makes no {variant!r} variant",
                                  hint="tflite artifacts are always fixed-shape")
        key = id(component)
        if key not in self._float:
            try:
                self._float[key] = to_tflite(component)
            except ConversionError as e:
                self._float[key] = e  # the other precisions fail the same way; do not lower again
        if isinstance(self._float[key], ConversionError):
            raise self._float[key]
        data = self._float[key]
        notes: list[str] = []
        if precision != "fp32":
            calib = None
            if precision == "int8-static":
                shapes = {n: tuple(t.shape) for n, t in component.example_inputs.items()}
                calib = [{k: v.numpy().astype("int32" if v.dtype.is_floating_point is False else "float32")
                          for k, v in d.items()}
                         for d in component.calibration_inputs(calibration_steps)
                         if all(tuple(d[n].shape) == s for n, s in shapes.items())]
                if not calib:
                    raise ConversionError(f"{component.role}: no calibration input has the tflite artifact's "
                                          f"fixed shapes {shapes}")
                notes.append(f"calibrated on {len(calib)} inputs from a {calibration_steps}-step trajectory")
            try:
                data = quantize_tflite(data, precision, calib)
            except ConversionError:
                raise
            except Exception as e:  # noqa: BLE001
                raise conversion_failure(e, role=component.role, fmt=self.format, stage=precision) from None
        path = Path(out_dir) / "model.tflite"
        path.write_bytes(data)
        static = {n: [int(s) for s in t.shape] for n, t in component.example_inputs.items()}
        return ConvertedArtifact(entry=path, files=[path], static_shapes=static, notes=notes)

    def close(self) -> None:
        self._float.clear()
