"""img2img: start index, add_noise and the partial loop against diffusers' img2img recipe.

diffusers' img2img pipelines call ``get_timesteps`` (skip the first ``N - int(N * strength)``
steps, times the scheduler order), ``set_begin_index`` and ``add_noise`` at the first remaining
timestep; LCM also passes ``strength`` to ``set_timesteps``. Tolerance 1e-5 relative L2 as in
test_sampler_parity.py (same float32 arithmetic, coefficients rounded differently).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from edge_sdk.errors import UsageError  # noqa: E402
from edge_sdk.samplers import get_sampler, randn  # noqa: E402

SHAPE = (1, 4, 8, 8)
MODULES = {
    "ddpm": ("DDPMScheduler", "scheduling_ddpm"),
    "ddim": ("DDIMScheduler", "scheduling_ddim"),
    "euler": ("EulerDiscreteScheduler", "scheduling_euler_discrete"),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", "scheduling_euler_ancestral_discrete"),
    "heun": ("HeunDiscreteScheduler", "scheduling_heun_discrete"),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", "scheduling_dpmsolver_multistep"),
    "unipc": ("UniPCMultistepScheduler", "scheduling_unipc_multistep"),
    "lcm": ("LCMScheduler", "scheduling_lcm"),
}


def model_fn(x, t):
    t = np.float32(float(t))
    return (np.float32(0.3) * x * np.cos(t / np.float32(300.0)) + np.float32(0.1) * np.sin(x)).astype(np.float32)


def reference(name, config, steps, strength, x0, noises, monkeypatch):
    cls_name, module_name = MODULES[name]
    module = importlib.import_module(f"diffusers.schedulers.{module_name}")
    sched = getattr(module, cls_name).from_config(config)
    if name == "lcm":
        sched.set_timesteps(steps, strength=strength)
    else:
        sched.set_timesteps(steps)
    init = min(int(steps * strength), steps)
    start = max(steps - init, 0) * sched.order
    timesteps = sched.timesteps[start:]
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(start)
    current = {"i": 0}
    monkeypatch.setattr(module, "randn_tensor",
                        lambda *a, **k: torch.from_numpy(noises[current["i"]].copy()), raising=False)
    x = sched.add_noise(torch.from_numpy(x0.copy()), torch.from_numpy(noises[-1].copy()), timesteps[:1])
    noised = x.numpy().copy()
    for j, t in enumerate(timesteps):
        current["i"] = start + j
        xin = sched.scale_model_input(x, t)
        x = sched.step(torch.from_numpy(model_fn(xin.numpy(), t.item())), t, x).prev_sample
    return start, timesteps.numpy(), noised, x.numpy()


@pytest.mark.parametrize("strength", [0.3, 0.75, 1.0])
@pytest.mark.parametrize("name", list(MODULES))
def test_img2img_matches_diffusers(name, strength, monkeypatch):
    steps = 4 if name == "lcm" else 10
    config = {"prediction_type": "v_prediction"} if name != "lcm" else {}
    x0 = randn(3, SHAPE) * np.float32(0.8)  # stands in for an encoded image latent
    gen = np.random.Generator(np.random.PCG64(11))
    noises = [gen.standard_normal(SHAPE, dtype=np.float32) for _ in range(2 * steps + 1)]

    s = get_sampler(name, config)
    start = s.set_timesteps_img2img(steps, strength)
    x = s.add_noise(x0, noises[-1], start)
    noised = x.copy()
    for i in range(start, len(s.timesteps)):
        out = model_fn(s.scale_model_input(x, i), s.timesteps[i])
        x = s.step(out, i, x, noise=noises[i] if s.needs_noise else None)

    ref_start, ref_ts, ref_noised, ref = reference(name, config, steps, strength, x0, noises, monkeypatch)
    assert start == ref_start
    np.testing.assert_allclose(s.timesteps[start:].astype(np.float64), ref_ts.astype(np.float64), rtol=1e-6)
    # add_noise is one multiply-add per element: float32 rounding only.
    np.testing.assert_allclose(noised, ref_noised, rtol=1e-5, atol=1e-5)
    err = np.linalg.norm(x - ref) / np.linalg.norm(ref)
    assert err < 1e-5, f"{name} strength {strength}: relative L2 {err:.3g}"


def test_strength_one_starts_at_zero_and_small_strength_skips_steps():
    s = get_sampler("ddim", {})
    assert s.set_timesteps_img2img(20, 1.0) == 0
    assert s.set_timesteps_img2img(20, 0.25) == 15
    assert get_sampler("heun", {}).set_timesteps_img2img(10, 0.5) == 10  # two calls per step


@pytest.mark.parametrize("strength", [0.0, -0.1, 1.5])
def test_strength_out_of_range_is_a_usage_error(strength):
    with pytest.raises(UsageError, match="strength"):
        get_sampler("euler", {}).set_timesteps_img2img(10, strength)


def test_strength_too_small_for_the_steps_is_a_usage_error():
    with pytest.raises(UsageError, match="no step"):
        get_sampler("ddim", {}).set_timesteps_img2img(4, 0.1)
