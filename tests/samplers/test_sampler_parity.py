"""Each numpy sampler against its diffusers namesake: same config, same model, same noise.

The model is a fixed deterministic numpy function of the sample and timestep, used unchanged on
both sides, so any difference comes from the scheduler arithmetic. Tolerance: 1e-5 relative L2
on the final sample. Both sides compute in float32; the numpy side reproduces diffusers'
schedules bit for bit (betas, cumulative alphas) and differs only in the rounding of per-step
scalar coefficients (float64 here, float32 torch there), about 1e-7 relative per step, so 1e-5
leaves a 100x margin over 10-25 steps while any real formula or schedule slip shows as >1e-3.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from edge_sdk.samplers import get_sampler, randn  # noqa: E402

RTOL = 1e-5
SHAPE = (2, 4, 8, 8)

DIFFUSERS = {
    "ddpm": ("DDPMScheduler", "scheduling_ddpm"),
    "ddim": ("DDIMScheduler", "scheduling_ddim"),
    "euler": ("EulerDiscreteScheduler", "scheduling_euler_discrete"),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", "scheduling_euler_ancestral_discrete"),
    "heun": ("HeunDiscreteScheduler", "scheduling_heun_discrete"),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", "scheduling_dpmsolver_multistep"),
    "unipc": ("UniPCMultistepScheduler", "scheduling_unipc_multistep"),
    "lcm": ("LCMScheduler", "scheduling_lcm"),
}
STEPS = {"ddpm": 12, "lcm": 4, "heun": 8}


def model_fn(x: np.ndarray, t) -> np.ndarray:
    """A smooth, non-linear stand-in denoiser: depends on both the sample and the timestep."""
    t = np.float32(float(t))
    return (np.float32(0.3) * x * np.cos(t / np.float32(300.0)) + np.float32(0.1) * np.sin(x)).astype(
        np.float32
    )


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


def run_numpy(name, config, steps, x_init, noises):
    s = get_sampler(name, config)
    s.set_timesteps(steps)
    x = x_init * np.float32(s.init_noise_sigma)
    for i, t in enumerate(s.timesteps):
        out = model_fn(s.scale_model_input(x, i), t)
        x = s.step(out, i, x, noise=noises[i] if s.needs_noise else None)
        assert s.last_denoised is not None and s.last_denoised.shape == x.shape
    return s, x


def run_diffusers(name, config, steps, x_init, noises, monkeypatch):
    cls_name, module_name = DIFFUSERS[name]
    module = importlib.import_module(f"diffusers.schedulers.{module_name}")
    cfg = {k: v for k, v in config.items() if k != "eta"}
    sampling_sample_as_eps = name == "euler_ancestral" and cfg.get("prediction_type") == "sample"
    if sampling_sample_as_eps:
        # diffusers' EulerAncestral leaves x0-prediction unimplemented; feed it the equivalent
        # eps = (x - x0) / sigma so the reference still runs the same update.
        cfg["prediction_type"] = "epsilon"
    sched = getattr(module, cls_name).from_config(cfg)
    sched.set_timesteps(steps)
    current = {"i": 0}
    # The reference side's RNG only: every randn_tensor call in step i returns our noise i.
    monkeypatch.setattr(
        module, "randn_tensor", lambda *a, **k: torch.from_numpy(noises[current["i"]].copy()),
        raising=False,  # deterministic schedulers never import it
    )
    x = torch.from_numpy(x_init.copy()) * sched.init_noise_sigma
    for i, t in enumerate(sched.timesteps):
        current["i"] = i
        xin = sched.scale_model_input(x, t)
        out = model_fn(xin.numpy(), t.item())
        if sampling_sample_as_eps:
            sigma = sched.sigmas[sched.step_index].item()
            out = (x.numpy() - out) / np.float32(sigma)
        kwargs = {}
        if name == "ddim" and config.get("eta", 0.0) > 0:
            kwargs = {"eta": config["eta"], "variance_noise": torch.from_numpy(noises[i].copy())}
        x = sched.step(torch.from_numpy(np.ascontiguousarray(out)), t, x, **kwargs).prev_sample
    return sched, x.numpy()


def check(name, config, monkeypatch, steps=None, rtol=RTOL):
    steps = steps or STEPS.get(name, 10)
    x_init = randn(1234, SHAPE)
    gen = np.random.Generator(np.random.PCG64(99))
    noises = [gen.standard_normal(SHAPE, dtype=np.float32) for _ in range(2 * steps)]
    s, ours = run_numpy(name, config, steps, x_init, noises)
    ref_sched, ref = run_diffusers(name, config, steps, x_init, noises, monkeypatch)
    # Integer timesteps must be identical; fractional ones (Karras, continuous) are derived
    # from sigmas, where torch's float32 sqrt is off by one ulp in ~20% of values (numpy's is
    # correctly rounded), so they agree to float32 rounding.
    np.testing.assert_allclose(
        np.asarray(s.timesteps, dtype=np.float64), ref_sched.timesteps.numpy().astype(np.float64),
        rtol=1e-6, atol=1e-6,
    )
    assert math.isclose(float(s.init_noise_sigma), float(ref_sched.init_noise_sigma), rel_tol=1e-6)
    assert np.isfinite(ref).all() and np.isfinite(ours).all()
    err = rel_l2(ours, ref)
    assert err < rtol, f"{name} {config}: relative L2 {err:.3g}"


SAMPLERS = list(DIFFUSERS)
PREDICTIONS = ["epsilon", "v_prediction", "sample"]
SPACINGS = ["leading", "trailing", "linspace"]


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("name", SAMPLERS)
def test_matches_diffusers(name, prediction, spacing, monkeypatch):
    config = {"prediction_type": prediction, "timestep_spacing": spacing}
    if spacing == "leading":
        config["steps_offset"] = 1  # Stable Diffusion's setting; exercises the offset
    check(name, config, monkeypatch)


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("name", SAMPLERS)
def test_beta_schedules_match_diffusers(name, beta_schedule, monkeypatch):
    config = {"beta_schedule": beta_schedule, "beta_start": 0.00085, "beta_end": 0.012}
    check(name, config, monkeypatch)


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n != "heun"])
def test_zero_terminal_snr_matches_diffusers(name, monkeypatch):
    # Zero terminal SNR is meant for v-prediction with trailing spacing (Lin et al. 2023).
    config = {
        "rescale_betas_zero_snr": True,
        "prediction_type": "v_prediction",
        "timestep_spacing": "trailing",
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
    }
    # Euler at zero terminal SNR starts at sigma_max = sqrt(2**24 - 1): torch's float32 sqrt
    # rounds it to 4096.0, numpy correctly to 4095.9998 (one ulp). The first Euler step cancels
    # a sample of size 4096 down to size ~1, which magnifies that ulp to 1.2e-5 relative; with
    # diffusers' sigma table swapped in, the two sides agree exactly (0.0). Hence 3e-5 here.
    check(name, config, monkeypatch, rtol=3e-5 if name == "euler" else RTOL)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m", "unipc"])
def test_karras_sigmas_match_diffusers(name, prediction, monkeypatch):
    config = {"use_karras_sigmas": True, "prediction_type": prediction,
              "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
    check(name, config, monkeypatch)


VARIANTS = [
    ("ddim", {"eta": 0.5}),
    ("ddim", {"eta": 1.0, "timestep_spacing": "trailing"}),
    ("ddim", {"set_alpha_to_one": False, "clip_sample": False}),
    ("ddim", {"thresholding": True, "sample_max_value": 1.5, "prediction_type": "sample"}),
    ("ddpm", {"variance_type": "fixed_large"}),
    ("ddpm", {"variance_type": "fixed_small_log", "clip_sample": False}),
    ("ddpm", {"thresholding": True, "sample_max_value": 2.0}),
    ("euler", {"final_sigmas_type": "sigma_min"}),
    ("euler", {"timestep_type": "continuous", "prediction_type": "v_prediction"}),
    ("euler", {"use_karras_sigmas": True, "sigma_min": 0.05, "sigma_max": 10.0}),
    ("heun", {"clip_sample": True, "prediction_type": "sample"}),
    ("dpmpp_2m", {"solver_order": 3}),
    ("dpmpp_2m", {"solver_order": 1}),
    ("dpmpp_2m", {"solver_type": "heun"}),
    ("dpmpp_2m", {"algorithm_type": "sde-dpmsolver++"}),
    ("dpmpp_2m", {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun", "use_karras_sigmas": True}),
    ("dpmpp_2m", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
    ("dpmpp_2m", {"final_sigmas_type": "sigma_min", "lower_order_final": False}),
    ("dpmpp_2m", {"euler_at_final": True, "timestep_spacing": "trailing"}),
    ("dpmpp_2m", {"lambda_min_clipped": -5.1, "beta_schedule": "squaredcos_cap_v2"}),
    ("dpmpp_2m", {"thresholding": True, "prediction_type": "sample", "sample_max_value": 1.2}),
    ("unipc", {"solver_order": 3}),
    # bh1 with a zero final sigma multiplies inf by 0 in diffusers (NaN), so compare at sigma_min.
    ("unipc", {"solver_type": "bh1", "final_sigmas_type": "sigma_min"}),
    ("unipc", {"solver_type": "bh1", "solver_order": 3, "final_sigmas_type": "sigma_min"}),
    ("unipc", {"predict_x0": False, "final_sigmas_type": "sigma_min"}),
    ("unipc", {"predict_x0": False, "solver_order": 3, "prediction_type": "v_prediction",
               "final_sigmas_type": "sigma_min"}),
    ("unipc", {"disable_corrector": [0, 2]}),
    ("unipc", {"final_sigmas_type": "sigma_min", "lower_order_final": False}),
    ("unipc", {"use_karras_sigmas": True, "sigma_min": 0.1, "sigma_max": 20.0}),
    ("lcm", {"original_inference_steps": 25, "timestep_scaling": 5.0}),
    ("lcm", {"clip_sample": True, "set_alpha_to_one": False}),
]


@pytest.mark.parametrize("name,config", VARIANTS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(VARIANTS)])
def test_config_variants_match_diffusers(name, config, monkeypatch):
    check(name, config, monkeypatch)


@pytest.mark.parametrize("steps", [1, 2, 8])
def test_lcm_few_steps_match_diffusers(steps, monkeypatch):
    check("lcm", {}, monkeypatch, steps=steps)


def test_ddpm_learned_range_matches_diffusers(monkeypatch):
    """learned_range: the model returns mean and a variance interpolation in 2C channels."""
    import diffusers.schedulers.scheduling_ddpm as mod

    config = {"variance_type": "learned_range"}
    steps = 6
    x_init = randn(5, SHAPE)
    gen = np.random.Generator(np.random.PCG64(7))
    noises = [gen.standard_normal(SHAPE, dtype=np.float32) for _ in range(steps)]

    def two_headed(x, t):
        return np.concatenate([model_fn(x, t), np.tanh(model_fn(x, t))], axis=1)

    s = get_sampler("ddpm", config)
    s.set_timesteps(steps)
    x = x_init.copy()
    for i, t in enumerate(s.timesteps):
        x = s.step(two_headed(x, t), i, x, noise=noises[i])
    ref_s = mod.DDPMScheduler.from_config(config)
    ref_s.set_timesteps(steps)
    current = {"i": 0}
    monkeypatch.setattr(mod, "randn_tensor", lambda *a, **k: torch.from_numpy(noises[current["i"]].copy()))
    y = torch.from_numpy(x_init.copy())
    for i, t in enumerate(ref_s.timesteps):
        current["i"] = i
        y = ref_s.step(torch.from_numpy(two_headed(y.numpy(), t.item())), t, y).prev_sample
    assert rel_l2(x, y.numpy()) < RTOL
