"""Numerical faults: NaN/Inf is caught at the step where it appears, and an fp16 component that
overflows is retried once in fp32 when the bundle has that artifact.

The models are small real ONNX graphs whose fp16 versions overflow for real on ONNX Runtime's
CPU provider. That provider runs an fp16 graph's arithmetic in fp32 (it moves the casts through
the graph: "InsertedPrecisionFreeCast") and only rounds to fp16 where a tensor must exist in fp16,
the output of a final shape-only op (here a Reshape to the same shape); so the overflow is built
there: the decoder multiplies by 60000 twice (fp32: 3.6e9*z, finite; fp16: past 65504, Inf), and the
denoiser adds ``relu(500 - t) * 1000``, which passes
65504 only once the timestep drops below ~434, i.e. at a known step in the middle of the run.
The fp16 files come from ONNX Runtime's own converter (``convert_float_to_float16``,
keep_io_types=True).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.transformers.float16 import convert_float_to_float16

import edge_sdk
from edge_sdk.bundle import BundleWriter
from edge_sdk.errors import NumericalFaultError
from edge_sdk.manifest import TensorSpec
from edge_sdk.planning.plan import ComponentPlan, Plan
from edge_sdk.runtimes.registry import open_artifact
from edge_sdk.samplers import get_sampler

SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "prediction_type": "epsilon", "timestep_spacing": "leading", "steps_offset": 1, "clip_sample": False}
STEPS = 10
THRESHOLD_T = 500.0 - 65504.0 / 1000.0  # the denoiser's fp16 output overflows once t < 434.5
IMG = ["batch", 3, "height", "width"]


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def _same_shape() -> onnx.TensorProto:
    # A final Reshape to the same shape: it makes ORT hold the output in fp16 (see the docstring).
    return numpy_helper.from_array(np.zeros(4, dtype=np.int64), "same")


def _decoder(path: Path) -> None:
    nodes = [helper.make_node("Mul", ["latent", "big"], ["y"]), helper.make_node("Mul", ["y", "big"], ["y2"]),
             helper.make_node("Reshape", ["y2", "same"], ["image"])]
    g = helper.make_graph(nodes, "decoder", [helper.make_tensor_value_info("latent", TensorProto.FLOAT, IMG)],
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, IMG)],
                          [_const("big", 60000.0), _same_shape()])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def _denoiser(path: Path, *, overflow: bool) -> None:
    nodes = [helper.make_node("Mul", ["sample", "tenth"], ["base"])]
    if overflow:
        nodes += [helper.make_node("Sub", ["five_hundred", "timestep"], ["d"]), helper.make_node("Relu", ["d"], ["r"]),
                  helper.make_node("Mul", ["r", "thousand"], ["s"]),
                  helper.make_node("Unsqueeze", ["s", "axes"], ["s4"]),
                  helper.make_node("Add", ["base", "s4"], ["out"])]
    else:
        nodes += [helper.make_node("Identity", ["base"], ["out"])]
    nodes += [helper.make_node("Reshape", ["out", "same"], ["noise_pred"])]
    inits = [_same_shape(), _const("tenth", 0.1), _const("five_hundred", 500.0), _const("thousand", 1000.0),
             numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), "axes")]
    g = helper.make_graph(nodes, "denoiser",
                          [helper.make_tensor_value_info("sample", TensorProto.FLOAT, IMG),
                           helper.make_tensor_value_info("timestep", TensorProto.FLOAT, ["batch"])],
                          [helper.make_tensor_value_info("noise_pred", TensorProto.FLOAT, IMG)], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def _fp16(src: Path, dst: Path) -> None:
    onnx.save(convert_float_to_float16(onnx.load(src), keep_io_types=True), dst)


def _bundle(target: Path, *, denoiser_fp16: bool, decoder_fp32: bool, denoiser_fp32: bool = True) -> Path:
    with BundleWriter(target, name="overflow") as w:
        w.model = {"kind": "latent_diffusion", "conditioning": "none", "sample_size": [8, 8], "in_channels": 3,
                   "vae_downsample": 1, "latent_scale_factor": 1.0, "image_channels": 3}
        w.sampler = {"default_sampler": "ddim", "default_steps": STEPS, "config": SCHEDULER}
        w.add_component("denoiser",
                        [TensorSpec("sample", "float32", IMG), TensorSpec("timestep", "float32", ["batch"])],
                        [TensorSpec("noise_pred", "float32", IMG)])
        w.add_component("decoder", [TensorSpec("latent", "float32", IMG)], [TensorSpec("image", "float32", IMG)])
        tmp = target.parent / f"{target.name}-src"
        tmp.mkdir()
        _denoiser(tmp / "den32.onnx", overflow=denoiser_fp16)
        _decoder(tmp / "dec32.onnx")
        if denoiser_fp32:
            d = w.artifact_dir("denoiser", "onnx", "fp32")
            (d / "model.onnx").write_bytes((tmp / "den32.onnx").read_bytes())
            w.add_artifact("denoiser", "onnx", "fp32", d / "model.onnx")
        if denoiser_fp16:
            d = w.artifact_dir("denoiser", "onnx", "fp16")
            _fp16(tmp / "den32.onnx", d / "model.onnx")
            w.add_artifact("denoiser", "onnx", "fp16", d / "model.onnx")
        d = w.artifact_dir("decoder", "onnx", "fp16")
        _fp16(tmp / "dec32.onnx", d / "model.onnx")
        w.add_artifact("decoder", "onnx", "fp16", d / "model.onnx")
        if decoder_fp32:
            d = w.artifact_dir("decoder", "onnx", "fp32")
            (d / "model.onnx").write_bytes((tmp / "dec32.onnx").read_bytes())
            w.add_artifact("decoder", "onnx", "fp32", d / "model.onnx")
        w.commit()
    return target


def _plan(denoiser: str, decoder: str) -> Plan:
    return Plan(components={"denoiser": ComponentPlan("onnxruntime", "onnx", denoiser, threads=1),
                            "decoder": ComponentPlan("onnxruntime", "onnx", decoder, threads=1)})


def test_the_fp16_decoder_really_overflows(tmp_path):
    b = _bundle(tmp_path / "b.bundle", denoiser_fp16=False, decoder_fp32=True)
    z = np.linspace(-2, 2, 3 * 8 * 8, dtype=np.float32).reshape(1, 3, 8, 8)
    with open_artifact(b / "decoder/onnx/fp16/model.onnx", "onnxruntime") as rt16, \
            open_artifact(b / "decoder/onnx/fp32/model.onnx", "onnxruntime") as rt32:
        out16, out32 = rt16.run({"latent": z})["image"], rt32.run({"latent": z})["image"]
    assert np.isinf(out16).all()  # |3.6e9 * z| > 65504 for every z here (none is 0)
    # fp32: two roundings of a product, so within a few ulps (rtol 1e-6).
    np.testing.assert_allclose(out32, 3.6e9 * z, rtol=1e-6)


def test_fp16_decoder_overflow_is_retried_in_fp32(tmp_path):
    b = _bundle(tmp_path / "b.bundle", denoiser_fp16=False, decoder_fp32=True)
    with edge_sdk.load(b, plan=_plan("fp32", "fp16")) as gen:
        fell_back = gen.generate(seed=3)
        again = gen.generate(seed=3)  # the fallback is kept: no new fault, no new note
    with edge_sdk.load(b, plan=_plan("fp32", "fp32")) as gen:
        reference = gen.generate(seed=3)
    assert np.isfinite(fell_back.raw).all()
    # The retry ran the very fp32 artifact the all-fp32 plan runs, on the same latents: identical.
    np.testing.assert_array_equal(fell_back.raw, reference.raw)
    notes = fell_back.info.get("notes", [])
    assert len(notes) == 1 and notes[0].startswith("decoder: fp16 produced 192 NaN/Inf values")
    assert "retried in fp32" in notes[0]
    assert "notes" not in again.info
    np.testing.assert_array_equal(again.raw, reference.raw)


def test_fp16_overflow_without_fp32_artifact_is_a_numerical_fault(tmp_path):
    b = _bundle(tmp_path / "b.bundle", denoiser_fp16=False, decoder_fp32=False)
    with edge_sdk.load(b, plan=_plan("fp32", "fp16")) as gen, pytest.raises(NumericalFaultError) as ei:
        gen.generate(seed=0)
    msg = str(ei.value)
    assert "decoder (onnx fp16 on onnxruntime) produced 192 NaN/Inf values" in msg


def _first_overflow_step() -> int:
    s = get_sampler("ddim", SCHEDULER)
    s.set_timesteps(STEPS)
    return next(i for i, t in enumerate(s.timesteps) if float(t) < THRESHOLD_T)


def test_denoiser_fault_is_reported_at_the_step_it_appears(tmp_path):
    b = _bundle(tmp_path / "b.bundle", denoiser_fp16=True, decoder_fp32=True, denoiser_fp32=False)
    k = _first_overflow_step()
    assert 0 < k < STEPS - 1  # in the middle of the run, so "at step k" is a real claim
    with edge_sdk.load(b, plan=_plan("fp16", "fp32")) as gen, pytest.raises(NumericalFaultError) as ei:
        gen.generate(seed=0)
    assert f"denoiser (onnx fp16 on onnxruntime) produced 192 NaN/Inf values at step {k}" in str(ei.value)


def test_denoiser_fault_at_step_k_is_retried_in_fp32(tmp_path):
    b = _bundle(tmp_path / "b.bundle", denoiser_fp16=True, decoder_fp32=True)
    k = _first_overflow_step()
    with edge_sdk.load(b, plan=_plan("fp16", "fp32")) as gen:
        res = gen.generate(seed=0)
    assert np.isfinite(res.raw).all()
    assert res.info["notes"] == [
        f"denoiser: fp16 produced 192 NaN/Inf values at step {k} (onnx on onnxruntime); "
        "retried in fp32 and kept fp32 for the rest of the run"]
