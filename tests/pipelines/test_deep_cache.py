"""DeepCache (issue 17): the denoiser's stream parts, full on every N-th step and shallow between.

The value checks run on the quick loop; the errors on a bundle without stream parts and the tune
hook on the text bundle the slow text-pipeline tests convert anyway. The
schedule and the numbers run on the streaming tests' bundle (``streamed_bundle``, a real
UNet2DConditionModel converted with ``--stream-parts denoiser``, shared with test_streaming.py so
its conversion is paid once), through the pipeline's ``Sessions`` in a real DDIM loop with CFG.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edge_sdk.errors import BundleError, UsageError

STEPS = 6


def test_shallow_paths_and_cached_tensors_follow_the_part_names():
    from edge_sdk.pipelines.deep_cache import shallow_path

    names = ["embed", "down0", "down1", "mid", "up0", "up1", "out"]
    assert shallow_path(names, "down0") == [0, 1, 5, 6]
    assert shallow_path(names, "conv_in") == [0, 5, 6]
    with pytest.raises(BundleError, match="stream-parts denoiser"):
        shallow_path(["embed", "mid", "out"], "down0")


def test_a_full_step_joins_only_the_parts_that_make_the_kept_tensors():
    """The deep graph of a joined DeepCache session: the parts the kept tensors depend on, in run
    order, and not the last up block or ``out``, which only the shallow graph holds."""
    from types import SimpleNamespace as NS

    from edge_sdk.pipelines.deep_cache import cached_names, deep_path, shallow_path

    def part(name, ins, outs):
        return NS(name=name, inputs=[NS(name=n) for n in ins], outputs=[NS(name=n) for n in outs])

    parts = [part("embed", ["sample", "t"], ["s0", "temb"]), part("down0", ["s0", "temb", "ctx"], ["s1", "s2"]),
             part("down1", ["s2", "temb"], ["s3"]), part("mid", ["s3", "temb"], ["mid"]),
             part("up0", ["mid", "temb", "s3"], ["u0"]), part("up1", ["u0", "temb", "ctx", "s0", "s1", "s2"], ["u1"]),
             part("out", ["u1"], ["noise_pred"])]
    comp = {"sample", "t", "ctx"}
    conv_in = shallow_path(parts, "conv_in")
    assert cached_names(parts, conv_in, comp) == ["u0", "s1", "s2"]
    assert deep_path(parts, ["u0", "s1", "s2"]) == [0, 1, 2, 3, 4]
    down0 = shallow_path(parts, "down0")
    assert cached_names(parts, down0, comp) == ["u0"] and deep_path(parts, ["u0"]) == [0, 1, 2, 3, 4]
    assert deep_path(parts, ["s1"]) == [0, 1]


def test_bad_values_are_refused():
    from edge_sdk.pipelines.request import GenerateRequest

    for bad in (0, -2, 1.5, True):
        with pytest.raises(UsageError, match="--deep-cache"):
            GenerateRequest(deep_cache=bad)
    with pytest.raises(UsageError, match="branch"):
        GenerateRequest(deep_cache=2, deep_cache_branch="mid")
    with pytest.raises(UsageError, match="needs deep_cache"):
        GenerateRequest(deep_cache_branch="conv_in")


# The text bundle is converted once per session for the slow text-pipeline tests (~30 s of
# torch.onnx export): these ride on it in the full run rather than pay it in the quick loop.
@pytest.mark.slow
def test_bundles_without_stream_parts_are_refused(text_bundle):
    import edge_sdk
    from edge_sdk.measure.tune import deep_cache_plans
    from edge_sdk.planning.plan import default_plan

    bundle, _ = text_bundle
    with pytest.raises(UsageError, match="--deep-cache"):
        edge_sdk.load(bundle, deep_cache=0)
    with pytest.raises(BundleError, match="stream parts") as e:
        edge_sdk.load(bundle, deep_cache=3)
    assert "--stream-parts denoiser" in e.value.hint
    with edge_sdk.load(bundle) as gen, pytest.raises(BundleError, match="stream parts"):
        gen.generate(prompt="a red cat", steps=2, deep_cache=2)
    # N=1 is DeepCache off: no parts needed, the plan is the plain one.
    with edge_sdk.load(bundle, deep_cache=1) as gen:
        assert gen.plan.components["denoiser"].deep_cache == 0
    notes: list[str] = []
    assert deep_cache_plans(bundle, default_plan(bundle), (2, 3), notes) == []
    assert "--stream-parts denoiser" in notes[0]


@pytest.mark.slow
def test_run_cli_refuses_a_bundle_without_stream_parts(text_bundle, cli, tmp_path):
    bundle, _ = text_bundle
    r = cli("run", str(bundle.root), "--steps", "2", "--deep-cache", "2", "--out", str(tmp_path / "x.png"))
    assert r.returncode == 3 and "--stream-parts denoiser" in r.stderr, r.stderr


# -- the schedule and the numbers (slow: the streamed bundle's conversion) -------------------------
def _loop(sessions, ref, *, sequential: bool = False, seed: int = 0) -> np.ndarray:
    """DDIM with CFG (scale 5) on the streamed denoiser, one row: batched (one call of two rows per
    step) or sequential (two calls per step). ``ref``: conftest's constants."""
    from edge_sdk.samplers import get_sampler, guided_output

    SCHEDULER, TEXT_LEN = ref.SCHEDULER, ref.TEXT_LEN
    rng = np.random.default_rng(seed)
    text = rng.standard_normal((2, TEXT_LEN, 32), dtype=np.float32)
    s = get_sampler("ddim", SCHEDULER)
    s.set_timesteps(STEPS)
    x = rng.standard_normal((1, 4, 16, 16), dtype=np.float32) * np.float32(s.init_noise_sigma)
    sessions.begin_run()

    def den(xx, t, rows, i):
        feeds = {"sample": xx, "timestep": np.full((len(xx),), t, np.float32), "encoder_hidden_states": text[rows]}
        return sessions.run("denoiser", feeds, step=i)

    for i in range(len(s.timesteps)):
        t = float(s.timesteps[i])
        out = guided_output(lambda xx, tt, cc, i=i: den(xx, tt, cc, i), s.scale_model_input(x, i), t,
                            np.array([0]), np.array([1]), 5.0, 0.0, mode="sequential" if sequential else "batched")
        x = s.step(out, i, x)
    return x


def _psnr(ref: np.ndarray, got: np.ndarray) -> float:
    peak = float(ref.max() - ref.min())
    return float(10 * np.log10(peak**2 / np.mean((ref.astype(np.float64) - got) ** 2)))


@pytest.mark.slow
def test_deep_cache_schedule_and_quality_on_onnxruntime(streamed_bundle, ref):
    from edge_sdk.bundle import Bundle
    from edge_sdk.pipelines.sessions import Sessions
    from edge_sdk.planning.plan import ComponentPlan, Plan

    b = Bundle.open(streamed_bundle)
    whole_cp = ComponentPlan("onnxruntime", "onnx", "fp32", device="cpu", threads=2)

    def sessions(n: int, branch: str = "down0") -> Sessions:
        return Sessions(b, Plan({"denoiser": replace(whole_cp, deep_cache=n, deep_cache_branch=branch)}))

    # tune's candidates: one plan per interval > 1, the denoiser made resident (the cache lives in its session).
    from edge_sdk.measure.tune import deep_cache_plans

    notes: list[str] = []
    cands = deep_cache_plans(b, Plan({"denoiser": replace(whole_cp, resident=False)}), (5, 1, 2, 3), notes)
    assert [(p.components["denoiser"].deep_cache, p.components["denoiser"].deep_cache_branch,
             p.components["denoiser"].resident) for p in cands] == [
        (n, br, True) for n in (2, 3, 5) for br in ("down0", "conv_in")] and not notes

    full = Sessions(b, Plan({"denoiser": whole_cp}))
    base = _loop(full, ref)
    # N=1 runs every part every step: the whole UNet's arithmetic split at block boundaries, so
    # the loop's result equals the whole session's to 1e-5 relative L2 (kernel order only).
    one = sessions(1)
    x1 = _loop(one, ref)
    assert np.linalg.norm(x1 - base) / np.linalg.norm(base) < 1e-5
    assert one._open["denoiser"].stats()["shallow_calls"] == 0

    # N=2: full on steps 0, 2, 4; the shallow path (embed, down0, up1, out) on 1, 3, 5.
    two = sessions(2)
    x2 = _loop(two, ref)
    rt = two._open["denoiser"]
    calls = dict(zip([p.name for p in rt.parts], rt.part_calls, strict=True))
    assert calls == {"embed": STEPS, "down0": STEPS, "down1": STEPS // 2, "mid": STEPS // 2, "up0": STEPS // 2,
                     "up1": STEPS, "out": STEPS}
    assert rt.kept == ["up0"]  # the deep feature: the last up block's input from below
    # Approximate by design: measured 45.1 dB (latents, peak = their range) on these random weights;
    # the bar is tune's default, 30 dB.
    q2 = _psnr(base, x2)
    assert 30 < q2 < 120, q2
    # A second run starts over (its first step is full) and gives the same result.
    assert np.array_equal(_loop(two, ref), x2) and rt.stats()["full_calls"] == STEPS // 2

    # CFG as two calls per step: one cache per call, the same schedule, the same result.
    seq = _loop(two, ref, sequential=True)
    assert rt.stats() == {"interval": 2, "branch": "down0", "full_calls": STEPS, "shallow_calls": STEPS}
    assert np.linalg.norm(seq - x2) / np.linalg.norm(x2) < 1e-5

    # conv_in: only embed, up1 and out on cached steps; the first down block's skips are kept too.
    ci = sessions(3, "conv_in")
    x3 = _loop(ci, ref)
    rt = ci._open["denoiser"]
    assert rt.kept == ["up0", "skip1"] and rt.part_calls[1] == STEPS // 3 and rt.part_calls[0] == STEPS
    assert 20 < _psnr(base, x3) < q2  # measured 39.9 dB at N=3: less exact than down0 at N=2
    for s in (full, one, two, ci):
        s.close()


@pytest.mark.slow
def test_deep_cache_on_openvino_matches_onnxruntime(streamed_bundle, ref):
    """The same ONNX parts on OpenVINO (f32): the N=2 loop equals ONNX Runtime's to 1e-4 relative L2."""
    from edge_sdk.bundle import Bundle
    from edge_sdk.pipelines.sessions import Sessions
    from edge_sdk.planning.plan import ComponentPlan, Plan

    b = Bundle.open(streamed_bundle)
    got = {}
    for runtime in ("onnxruntime", "openvino"):
        cp = ComponentPlan(runtime, "onnx", "fp32", device="cpu", threads=2, deep_cache=2)
        s = Sessions(b, Plan({"denoiser": cp}))
        try:
            got[runtime] = _loop(s, ref)
            assert s._open["denoiser"].stats()["shallow_calls"] == STEPS // 2
            # OpenVINO joins the parts into two graphs (full step, shallow path); ONNX Runtime runs them in turn.
            assert s._open["denoiser"].joined == (runtime == "openvino")
            assert len(s._open["denoiser"]._sessions) == (2 if runtime == "openvino" else len(b.stream_parts(
                "denoiser", "onnx", "fp32")))
            # Between components the pipeline gives every part's scratch back; the parts then run
            # as before (same engine, same inputs: equal to 1e-6, i.e. up to thread-order rounding).
            s._open["denoiser"].release_scratch()
            again = _loop(s, ref)
            assert np.linalg.norm(again - got[runtime]) / np.linalg.norm(got[runtime]) < 1e-6
        finally:
            s.close()
    want = got["onnxruntime"]
    assert np.linalg.norm(got["openvino"] - want) / np.linalg.norm(want) < 1e-4


@pytest.mark.slow
def test_openvino_chain_refuses_parts_that_do_not_fit(streamed_bundle):
    """A joined graph must make every output it is asked for; parts that leave one unmade (a part
    missing from the chain) are one ModelFileError naming it, before anything compiles."""
    from edge_sdk.bundle import Bundle
    from edge_sdk.errors import ModelFileError
    from edge_sdk.runtimes.registry import open_chain

    parts = Bundle.open(streamed_bundle).stream_parts("denoiser", "onnx", "fp32")
    chain = [p for p in parts if p.name != "mid"]
    with pytest.raises(ModelFileError, match="no part of the chain makes noise_pred_missing"):
        open_chain([p.artifact.path for p in chain], "openvino", ["noise_pred_missing"], device="cpu",
                   verified=[f for p in chain for f in p.artifact.files])
    whole = open_chain([p.artifact.path for p in parts], "openvino", ["noise_pred"], device="cpu",
                       verified=[f for p in parts for f in p.artifact.files])
    # The joined graph's inputs are the component's: every part boundary is inside it.
    assert sorted(t.name for t in whole.inputs) == ["encoder_hidden_states", "sample", "timestep"]
    assert [t.name for t in whole.outputs] == ["noise_pred"]
    whole.close()


def test_tune_cli_reads_its_deep_cache_intervals():
    from edge_sdk.cli.commands.tune import _intervals

    assert _intervals("2,3,5") == [2, 3, 5] and _intervals("none") == [] and _intervals("") == []
    for bad in ("two", "0,2"):
        with pytest.raises(UsageError, match="--deep-cache"):
            _intervals(bad)
