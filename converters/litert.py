"""TFLite / LiteRT (.tflite) with litert-torch; fp16 and int8 through ai-edge-quantizer.

TFLite graphs here have fixed shapes (the example inputs'): XNNPACK and the NPU delegates plan
memory per shape, so the artifact records ``static_shapes``. 64-bit integer inputs become int32
(LiteRT's default without x64), which the pipeline handles by casting to the reported dtype.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

from edge_sdk.converters.base import ConvertedArtifact, Converter
from edge_sdk.converters.precision import check_supported
from edge_sdk.converters.spec import ComponentSpec
from edge_sdk.converters.unsupported import conversion_failure
from edge_sdk.errors import ConversionError

SIGNATURE = "serving_default"


@contextlib.contextmanager
def _quiet():
    """litert-torch and the quantizer print per-stage progress on stdout; the CLI owns the terminal."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def to_tflite(component: ComponentSpec) -> bytes:
    import litert_torch

    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        with _quiet():
            # Keyword inputs name the signature's inputs after ours ('sample', 'timestep', ...).
            model = litert_torch.convert(component.module.eval(), sample_kwargs=dict(component.example_inputs))
            return bytes(model.tflite_model())
    except Exception as e:  # noqa: BLE001 - lowering errors come from torch.export, MLIR and the converter
        raise conversion_failure(e, role=component.role, fmt="tflite", stage="litert_torch.convert") from None


def _recipe(precision: str):
    from ai_edge_quantizer import qtyping, recipe, recipe_manager

    if precision == "int8-weight":
        return recipe.weight_only_wi8_afp32()
    if precision == "int8-static":
        return recipe.static_wi8_ai8()
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

    q = quantizer.Quantizer(bytearray(float_model), _recipe(precision))
    with _quiet():
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
    runtime = "litert"

    def __init__(self) -> None:
        self._float: dict[int, bytes] = {}

    def convert(self, component: ComponentSpec, precision: str, out_dir: Path, *, variant: str = "",
                calibration_steps: int = 20) -> ConvertedArtifact:
        check_supported(self.format, precision)
        if variant:
            raise ConversionError(f"the tflite converter makes no {variant!r} variant",
                                  hint="tflite artifacts are always fixed-shape")
        key = id(component)
        if key not in self._float:
            self._float[key] = to_tflite(component)
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
