"""Each component runs on the runtime, precision and residency its plan entry names."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import edge_sdk
from edge_sdk.planning.plan import ComponentPlan, Plan

pytestmark = pytest.mark.slow  # converts or plans whole bundles: seconds each, in the full run


def mixed_plan(bundle) -> Plan:
    """Denoiser and encoder on ONNX Runtime; text encoder and decoder on OpenVINO, which reads the
    same ONNX files directly; the decoder released after each use."""
    ort = ComponentPlan(runtime="onnxruntime", format="onnx", precision="fp32", threads=1)
    ov = ComponentPlan(runtime="openvino", format="onnx", precision="fp32", device="cpu", threads=1)
    return Plan(components={"denoiser": ort, "encoder": ort, "text_encoder": ov,
                            "decoder": dataclasses.replace(ov, resident=False)})


def test_mixed_runtimes_give_the_same_image_as_one_runtime(text_bundle):
    pytest.importorskip("openvino")
    bundle, _ = text_bundle
    with edge_sdk.load(bundle, runtime="onnxruntime") as one:
        expected = one.generate(prompt="a red cat", steps=3, seed=4, guidance=3.0)
        assert {type(rt).__name__ for rt in one.pipeline.sessions._open.values()} == {"OnnxRuntime"}
    with edge_sdk.load(bundle, plan=mixed_plan(bundle)) as mixed:
        got = mixed.generate(prompt="a red cat", steps=3, seed=4, guidance=3.0)
        opened = {name: type(rt).__name__ for name, rt in mixed.pipeline.sessions._open.items()}
        # The OpenVINO text encoder's scratch was released when the denoiser ran (release_scratch):
        # a second generation allocates it again and gives the same image, bit for bit.
        np.testing.assert_array_equal(mixed.generate(prompt="a red cat", steps=3, seed=4, guidance=3.0).raw, got.raw)
    # The decoder is not resident, so it was released after decoding; the rest stay open.
    assert opened == {"text_encoder": "OpenVinoRuntime", "denoiser": "OnnxRuntime"}
    # OpenVINO's CPU plugin at f32 and ORT differ by summation order and fused kernels: ~1e-6 per
    # call (measured 1.3e-6 on the image); 1e-4 is the pipelines' fp32 bar.
    np.testing.assert_allclose(got.raw, expected.raw, atol=1e-4)


def test_plan_round_trips_through_json(text_bundle):
    bundle, _ = text_bundle
    plan = mixed_plan(bundle)
    again = Plan.from_json(plan.to_json())
    assert again.components["decoder"].resident is False and again.components["text_encoder"].runtime == "openvino"


def test_default_plan_covers_every_component(text_bundle):
    bundle, _ = text_bundle
    with edge_sdk.load(bundle) as g:
        assert set(g.plan.components) == {"text_encoder", "denoiser", "decoder", "encoder"}



@pytest.mark.slow
def test_mixed_precisions_and_embeddings_without_a_text_encoder(ref, tmp_path):
    """Denoiser fp32 and decoder fp16 (ONNX on ONNX Runtime) in one plan; the bundle has no text
    encoder, so precomputed embeddings drive it."""
    from edge_sdk.errors import UsageError

    spec, modules = ref.build_text_spec(tmp_path)
    bundle = edge_sdk.convert(spec, tmp_path / "mixed.bundle", precisions="fp32,fp16",
                              components=["denoiser", "decoder"])
    ids = np.array([[2, 5, 9, 11, 3, 0, 0, 0]], dtype=np.int64)
    cond = ref.torch_call(modules["text_encoder"], ids)
    uncond = ref.torch_call(modules["text_encoder"], np.array([[2, 3, 0, 0, 0, 0, 0, 0]], dtype=np.int64))
    ort32 = ComponentPlan(runtime="onnxruntime", format="onnx", precision="fp32")
    args = dict(prompt_embeds=cond, negative_prompt_embeds=uncond, steps=3, seed=1, guidance=3.0)
    with edge_sdk.load(bundle, plan=Plan(components={"denoiser": ort32, "decoder": ort32})) as g:
        full = g.generate(**args)
        with pytest.raises(UsageError, match="no text encoder"):
            g.generate(prompt="a red cat", steps=2)
        with pytest.raises(UsageError, match="negative_prompt_embeds"):
            g.generate(prompt_embeds=cond, steps=2, guidance=3.0)
    half = dataclasses.replace(ort32, precision="fp16")
    with edge_sdk.load(bundle, plan=Plan(components={"denoiser": ort32, "decoder": half})) as g:
        mixed = g.generate(**args)
    np.testing.assert_array_equal(mixed.latents, full.latents)  # the denoiser ran fp32 in both
    diff = float(np.abs(mixed.raw - full.raw).max())
    # fp16 keeps ~3 significant digits: on outputs in [-1.3, 1.3] the decoder moves by ~1e-3
    # (measured 6e-4); a zero difference would mean the fp16 artifact never ran.
    assert 0 < diff < 2e-2, diff
