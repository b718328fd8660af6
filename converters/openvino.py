"""OpenVINO IR (.xml + .bin) with OpenVINO's own PyTorch frontend; fp16 and int8 through NNCF.

fp32 is saved as fp32 (``compress_to_fp16=False``: ``ov.save_model`` would otherwise halve the
weights silently). fp16 stores weight constants (>= 256 elements) as f16 behind a decompression
Convert, the layout ``compress_to_fp16`` makes, but by our own pass: OpenVINO's also compresses
the timestep-frequency constants (and ignores the disable_fp16_compression mark from Python),
which measured 3.8e-2 relative L2 on a tiny UNet against 3.7e-4 this way. The 'static' variant
is the same model reshaped to the example inputs' shapes,
for NPUs, which compile fixed shapes only.
"""

from __future__ import annotations

from pathlib import Path

from edge_sdk.converters.base import ConvertedArtifact, Converter
from edge_sdk.converters.precision import check_supported
from edge_sdk.converters.spec import ComponentSpec
from edge_sdk.converters.unsupported import conversion_failure
from edge_sdk.errors import ConversionError


def to_ov_model(component: ComponentSpec):
    """The component as an ``ov.Model`` with our input names, named dynamic axes as -1, output names.

    Converted from the example inputs alone: the frontend's ``input=`` spec matches names against
    the forward's parameter names, which wrappers do not share with the manifest's names. The
    dynamic/fixed axes are applied by ``reshape`` afterwards, by position.
    """
    import openvino as ov

    try:
        model = ov.convert_model(component.module.eval(), example_input=tuple(component.example_inputs.values()))
    except Exception as e:  # noqa: BLE001 - OpConversionFailure and friends
        raise conversion_failure(e, role=component.role, fmt="openvino", stage="convert_model",
                                 component=component) from None
    _apply_names(model, component)
    shapes = {}
    for port, (name, t) in zip(model.inputs, component.example_inputs.items(), strict=False):
        dyn = component.dynamic_dims.get(name, {})
        shapes[port] = ov.PartialShape([-1 if i in dyn else int(s) for i, s in enumerate(t.shape)])
    try:
        model.reshape(shapes)
    except Exception as e:  # noqa: BLE001
        raise conversion_failure(e, role=component.role, fmt="openvino", stage="reshape to the named dynamic dims",
                                 component=component) from None
    _apply_names(model, component)
    return model


def _apply_names(model, component: ComponentSpec) -> None:
    """The frontend gives a tensor several aliases ('timestep', '22', ...), and reshape or NNCF may
    bring others back; keep exactly ours, in order."""
    for port, name in zip(model.inputs, component.example_inputs, strict=False):
        port.get_tensor().set_names({name})
    for port, name in zip(model.outputs, component.output_names, strict=False):
        port.get_tensor().set_names({name})


def compress_weights_fp16(model, keep: list, min_elements: int = 256) -> int:
    """Replace f32 weight Constants by f16 Constant + Convert(f32) in place; returns how many."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    keep_names = {op.get_friendly_name() for op in keep}
    count = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant" or op.get_element_type() != ov.Type.f32:
            continue
        if op.get_friendly_name() in keep_names:
            continue
        data = op.get_data()
        if data.size < min_elements or not np.all(np.abs(data) <= 65504):
            continue
        c16 = ops.constant(data.astype(np.float16))
        cvt = ops.convert(c16, ov.Type.f32)
        cvt.get_rt_info()["decompression"] = ""  # plugins keep it as weight decompression
        for target in list(op.output(0).get_target_inputs()):
            target.replace_source_output(cvt.output(0))
        count += 1
    model.validate_nodes_and_infer_types()
    return count


class OpenVinoConverter(Converter):
    format = "openvino"
    methods = {
        "fp32": "openvino.convert_model, saved fp32 (compress_to_fp16=False)",
        "fp16": "f16 weight constants + decompression Convert (timestep embedding kept f32)",
        "int8-weight": "nncf.compress_weights INT8_ASYM (weights only)",
        "int8-static": "nncf.quantize on trajectory calibration inputs (weights + activations)",
    }
    variants = ("static",)
    # OpenVINO's PyTorch frontend makes a malformed model of the query-chunked attention (a Split
    # whose outputs it then cannot index: "index '1' out of range" on clone). OpenVINO runs the
    # ONNX 'sliced' artifacts instead (tests/converters/test_low_memory_artifacts.py).
    skips_alternatives = {"sliced": "no OpenVINO IR of the sliced variant (its PyTorch frontend mis-converts "
                                    "the query chunks); OpenVINO runs the ONNX sliced artifact: convert with "
                                    "--format onnx,openvino"}
    # fp32 means f32 kernels; the CPU here may default to bf16. The adapter does this on CPU anyway.
    validation_options = {"inference_precision": "f32", "cache_dir": False}

    def __init__(self) -> None:
        self._base: dict[int, object] = {}

    def _model(self, component: ComponentSpec):
        key = id(component)
        if key not in self._base:
            try:
                self._base[key] = to_ov_model(component)
            except ConversionError as e:
                self._base[key] = e  # the other precisions fail the same way; do not convert again
        if isinstance(self._base[key], ConversionError):
            raise self._base[key]
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
        from edge_sdk.converters.precision_guard import ov_timestep_ops

        keep_f32 = ov_timestep_ops(model)
        try:
            if precision == "fp16":
                n = compress_weights_fp16(model, keep_f32)
                notes.append(f"{n} weight constants stored as fp16")
            elif precision == "int8-weight":
                import nncf

                model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
            elif precision == "int8-static":
                import nncf

                data = component.calibration_inputs(calibration_steps)
                feeds = [{k: v.numpy() for k, v in d.items()} for d in data]
                if static:
                    feeds = [f for f in feeds if all(list(f[n].shape) == s for n, s in static.items())] or feeds
                ignored = nncf.IgnoredScope(names=[op.get_friendly_name() for op in keep_f32
                                                   if op.get_type_name() not in ("Constant", "Convert")],
                                            validate=False)
                model = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds),
                                      preset=nncf.QuantizationPreset.MIXED, ignored_scope=ignored)
                notes.append(f"calibrated on {len(feeds)} inputs from a {calibration_steps}-step trajectory")
            _apply_names(model, component)
            xml = Path(out_dir) / "model.xml"
            ov.save_model(model, str(xml), compress_to_fp16=False)
        except ConversionError:
            raise
        except ImportError as e:  # nncf makes both int8 precisions; it is in the `convert` extra
            raise ConversionError(f"{component.role} openvino {precision} needs {e.name or 'nncf'}, "
                                  "which is not installed",
                                  hint="pip install 'edge-sdk[convert]' (or: pip install nncf)") from None
        except Exception as e:  # noqa: BLE001 - nncf / openvino raise their own types
            raise conversion_failure(e, role=component.role, fmt=self.format, stage=precision) from None
        return ConvertedArtifact(entry=xml, files=[xml, xml.with_suffix(".bin")], static_shapes=static, notes=notes)

    def close(self) -> None:
        self._base.clear()
