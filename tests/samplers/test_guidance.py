"""Classifier-free guidance: the math against diffusers, batched against sequential evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.errors import UsageError
from edge_sdk.samplers import apply_guidance, get_sampler, guided_output, randn

SHAPE = (2, 4, 8, 8)


@pytest.mark.parametrize("rescale", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("scale", [1.0, 4.0, 7.5])
def test_guidance_matches_diffusers_rescale_noise_cfg(scale, rescale):
    torch = pytest.importorskip("torch")
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    uncond, cond = randn(1, SHAPE), randn(2, SHAPE) * np.float32(1.3)
    ours = apply_guidance(uncond, cond, scale, rescale)
    u, c = torch.from_numpy(uncond), torch.from_numpy(cond)
    ref = u + scale * (c - u)
    if rescale > 0:
        ref = rescale_noise_cfg(ref, c, guidance_rescale=rescale)
    # Elementwise float32 arithmetic plus two standard deviations (float32 reductions whose
    # summation order differs between numpy and torch): a few ulps, so 1e-6 relative.
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-6, atol=1e-6)
    assert ours.dtype == np.float32


def test_rescale_one_gives_the_conditional_std_per_row():
    uncond, cond = randn(1, SHAPE), randn(2, SHAPE) * np.float32(2.0)
    out = apply_guidance(uncond, cond, 9.0, rescale=1.0)
    np.testing.assert_allclose(
        out.reshape(2, -1).std(axis=1, ddof=1), cond.reshape(2, -1).std(axis=1, ddof=1), rtol=1e-5
    )


def test_guidance_rejects_bad_input():
    with pytest.raises(UsageError, match="rescale"):
        apply_guidance(randn(1, SHAPE), randn(2, SHAPE), 5.0, rescale=1.5)
    with pytest.raises(UsageError, match="shape"):
        apply_guidance(randn(1, SHAPE), randn(2, (1, 4, 8, 8)), 5.0)


def numpy_denoiser(x, t, context):
    # Each row depends on its own sample and context only, like a real conditional denoiser.
    return np.tanh(x * context[:, :1, None, None] + np.float32(t) / 1000).astype(np.float32)


def test_batched_and_sequential_cfg_give_identical_samples():
    """Same sampler run twice, guidance evaluated both ways: bit-identical final samples."""
    uncond_ctx = np.zeros((2, 8), dtype=np.float32)
    cond_ctx = np.linspace(0.5, 1.5, 16, dtype=np.float32).reshape(2, 8)
    calls = {"batched": [], "sequential": []}
    finals = {}
    for mode in ("batched", "sequential"):
        s = get_sampler("dpmpp_2m", {"prediction_type": "epsilon"})
        s.set_timesteps(8)
        x = randn(7, SHAPE)

        def denoise(xb, t, ctx, mode=mode):
            calls[mode].append(xb.shape[0])
            return numpy_denoiser(xb, t, ctx)

        for i, t in enumerate(s.timesteps):
            out = guided_output(denoise, s.scale_model_input(x, i), t, uncond_ctx, cond_ctx,
                                scale=6.0, rescale=0.5, mode=mode)
            x = s.step(out, i, x)
        finals[mode] = x
    # Per-row elementwise work: the batch layout cannot change a single bit.
    np.testing.assert_array_equal(finals["batched"], finals["sequential"])
    assert calls["batched"] == [4] * 8 and calls["sequential"] == [2] * 16


def test_scale_one_runs_only_the_conditional_pass():
    seen = []

    def denoise(xb, t, ctx):
        seen.append(ctx.copy())
        return numpy_denoiser(xb, t, ctx)

    x = randn(0, SHAPE)
    cond = np.ones((2, 8), dtype=np.float32)
    out = guided_output(denoise, x, 10.0, np.zeros_like(cond), cond, scale=1.0, mode="sequential")
    assert len(seen) == 1 and np.array_equal(seen[0], cond)
    np.testing.assert_array_equal(out, numpy_denoiser(x, 10.0, cond))


def test_unknown_guidance_mode_is_a_usage_error():
    with pytest.raises(UsageError, match="mode"):
        guided_output(numpy_denoiser, randn(0, SHAPE), 1.0, np.zeros((2, 8), np.float32),
                      np.ones((2, 8), np.float32), 5.0, mode="parallel")


def test_batched_and_sequential_cfg_agree_through_onnx_runtime(tmp_path):
    """A real ORT session (conv + per-row context): batch of 2N vs two batches of N."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.Generator(np.random.PCG64(0))
    w = numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3), dtype=np.float32) * 0.2, "w")
    b = numpy_helper.from_array(np.zeros(4, dtype=np.float32), "b")
    shape4 = numpy_helper.from_array(np.array([-1, 1, 1, 1], dtype=np.int64), "shape4")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["ctx"], ["ctx_mean"], axes=[1], keepdims=1),
        helper.make_node("Reshape", ["ctx_mean", "shape4"], ["ctx4"]),
        helper.make_node("Mul", ["conv", "ctx4"], ["scaled"]),
        helper.make_node("Tanh", ["scaled"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "cfg_toy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8, 8]),
         helper.make_tensor_value_info("ctx", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])],
        initializer=[w, b, shape4],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "cfg_toy.onnx"
    onnx.save(model, str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def denoise(xb, t, ctx):
        return sess.run(["y"], {"x": xb, "ctx": ctx})[0]

    x = randn(3, SHAPE)
    uncond, cond = np.zeros((2, 8), np.float32), np.full((2, 8), 1.5, np.float32)
    batched = guided_output(denoise, x, 500.0, uncond, cond, 7.5, 0.7, mode="batched")
    sequential = guided_output(denoise, x, 500.0, uncond, cond, 7.5, 0.7, mode="sequential")
    # ORT may pick a different conv kernel blocking for batch 4 vs 2; float32 sums reordered
    # by that stay within a few ulps, amplified at most 7.5x by the guidance scale.
    np.testing.assert_allclose(batched, sequential, rtol=1e-5, atol=1e-6)
    assert not np.allclose(batched, denoise(x, 500.0, cond))  # guidance did something
