"""OpenVINO IR (.xml + .bin) with OpenVINO's own PyTorch frontend; fp16 and int8 through NNCF.

fp32 is saved as fp32 (``compress_to_fp16=False``: ``ov.save_model`` would otherwise halve the
weights silently). The 'static' variant is the same model reshaped to the example inputs' shapes,
for NPUs, which compile fixed shapes only.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edge_sdk.converters.base import ConvertedArtifact, Converter
from edge_sdk.converters.precision import check_supported
from edge_sdk.converters.spec import ComponentSpec
from edge_sdk.converters.unsupported import conversion_failure
from edge_sdk.errors import ConversionError

_OV_TYPES = {torch.float32: "f32", torch.float16: "f16", torch.int64: "i64", torch.int32: "i32",
             torch.uint8: "u8", torch.bool: "boolean"}


def to_ov_model(component: ComponentSpec):
    """The component as an ``ov.Model`` with our input names, named dynamic axes as -1, output names."""
    import openvino as ov

    spec = []
    for name, t in component.example_inputs.items():
        dyn = component.dynamic_dims.get(name, {})
        shape = ov.PartialShape([-1 if i in dyn else int(s) for i, s in enumerate(t.shape)])
        spec.append((name, shape, getattr(ov.Type, _OV_TYPES[t.dtype])))
    try:
        model = ov.convert_model(component.module.eval(), example_input=tuple(component.example_inputs.values()),
                                 input=spec)
    except Exception as e:  # noqa: BLE001 - OpConversionFailure and friends
        raise conversion_failure(e, role=component.role, fmt="openvino", stage="convert_model") from None
    # The frontend gives a tensor several aliases ('timestep', '22', ...); keep exactly ours.
    for port, name in zip(model.inputs, component.example_inputs):
        port.get_tensor().set_names({name})
    for port, name in zip(model.outputs, component.output_names):
        port.get_tensor().set_names({name})
    return model


class OpenVinoConverter(Converter):
    format = "openvino"
    methods = {
        "fp32": "openvino.convert_model, saved fp32 (compress_to_fp16=False)",
        "fp16": "openvino.save_model(compress_to_fp16=True)",
        "int8-weight": "nncf.compress_weights INT8_ASYM (weights only)",
        "int8-static": "nncf.quantize on trajectory calibration inputs (weights + activations)",
    }
    runtime = "openvino"
    variants = ("static",)
    # fp32 means f32 kernels; the CPU here may default to bf16. The adapter does this on CPU anyway.
    validation_options = {"inference_precision": "f32", "cache_dir": False}

    def __init__(self) -> None:
        self._base: dict[int, object] = {}

    def _model(self, component: ComponentSpec):
        key = id(component)
        if key not in self._base:
            self._base[key] = to_ov_model(component)
        return self._base[key]

    def convert(self, component: ComponentSpec, precision: str, out_dir: Path, *, variant: str = "",
                calibration_steps: int = 20) -> ConvertedArtifact:
        import openvino as ov

        check_supported(self.format, precision)
        if variant not in ("", "static"):
            raise ConversionError(f"the openvino converter makes no {variant!r} variant", hint="variants: static")
        model = self._model(component).clone()
        notes: list[str] = []
        static = None
        if variant == "static":
            static = {n: [int(s) for s in t.shape] for n, t in component.example_inputs.items()}
            model.reshape({n: ov.PartialShape(s) for n, s in static.items()})
        try:
            if precision == "int8-weight":
                import nncf

                model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
            elif precision == "int8-static":
                import nncf

                data = component.calibration_inputs(calibration_steps)
                feeds = [{k: v.numpy() for k, v in d.items()} for d in data]
                if static:
                    feeds = [f for f in feeds if all(list(f[n].shape) == s for n, s in static.items())] or feeds
                model = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds),
                                      preset=nncf.QuantizationPreset.MIXED)
                notes.append(f"calibrated on {len(feeds)} inputs from a {calibration_steps}-step trajectory")
            xml = Path(out_dir) / "model.xml"
            ov.save_model(model, str(xml), compress_to_fp16=(precision == "fp16"))
        except ConversionError:
            raise
        except Exception as e:  # noqa: BLE001 - nncf / openvino raise their own types
            raise conversion_failure(e, role=component.role, fmt=self.format, stage=precision) from None
        return ConvertedArtifact(entry=xml, files=[xml, xml.with_suffix(".bin")], static_shapes=static, notes=notes)

    def close(self) -> None:
        self._base.clear()
