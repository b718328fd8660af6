"""The registry and the errors a user can hit: names, configs, misuse of the loop."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import edge_sdk.samplers as samplers_pkg
from edge_sdk.errors import UsageError
from edge_sdk.samplers import available_samplers, get_sampler, randn, sampler_for_config

NAMES = ["ddpm", "ddim", "euler", "euler_ancestral", "heun", "dpmpp_2m", "unipc", "lcm"]


def test_available_samplers_are_the_eight():
    assert sorted(available_samplers()) == sorted(NAMES)


def test_unknown_sampler_lists_the_known_ones():
    with pytest.raises(UsageError) as err:
        get_sampler("dpm_fast_9000", {})
    for name in NAMES:
        assert name in str(err.value)
    assert "dpm_fast_9000" in str(err.value)


@pytest.mark.parametrize(
    "class_name,name",
    [("DDPMScheduler", "ddpm"), ("DDIMScheduler", "ddim"), ("EulerDiscreteScheduler", "euler"),
     ("EulerAncestralDiscreteScheduler", "euler_ancestral"), ("HeunDiscreteScheduler", "heun"),
     ("DPMSolverMultistepScheduler", "dpmpp_2m"), ("UniPCMultistepScheduler", "unipc"),
     ("LCMScheduler", "lcm")],
)
def test_diffusers_class_names_map_to_samplers(class_name, name):
    assert get_sampler(class_name, {}).name == name
    assert sampler_for_config({"_class_name": class_name}) == name


def test_sampler_for_config_without_a_port():
    sd15 = {"_class_name": "PNDMScheduler", "beta_schedule": "scaled_linear", "skip_prk_steps": True}
    assert sampler_for_config(sd15) == "ddim"
    assert sampler_for_config({}) == "ddim"
    with pytest.raises(UsageError, match="PNDMScheduler"):
        sampler_for_config(sd15, default=None)


def test_config_keys_mean_what_diffusers_says_and_unknown_keys_are_ignored():
    cfg = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "skip_prk_steps": True,
           "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
           "steps_offset": 1, "timestep_spacing": "leading", "prediction_type": "v_prediction"}
    s = get_sampler("ddim", cfg)
    s.set_timesteps(10)
    assert s.timesteps.tolist() == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    assert s.prediction_type == "v_prediction"
    # Per-sampler defaults follow the diffusers class: LCM defaults to scaled_linear.
    assert get_sampler("lcm", {}).config["beta_schedule"] == "scaled_linear"


def test_eps_is_accepted_for_epsilon():
    assert get_sampler("euler", {"prediction_type": "eps"}).prediction_type == "epsilon"


@pytest.mark.parametrize(
    "config,match",
    [({"prediction_type": "noise"}, "prediction_type"),
     ({"timestep_spacing": "cosine"}, "timestep_spacing"),
     ({"beta_schedule": "sigmoidal"}, "beta_schedule"),
     ({"num_train_timesteps": 0}, "num_train_timesteps")],
)
@pytest.mark.parametrize("name", NAMES)
def test_bad_config_values_are_usage_errors(name, config, match):
    with pytest.raises(UsageError, match=match):
        get_sampler(name, config)


def test_specific_config_errors():
    with pytest.raises(UsageError, match="algorithm_type"):
        get_sampler("dpmpp_2m", {"algorithm_type": "dpmsolver"})
    with pytest.raises(UsageError, match="solver_order"):
        get_sampler("unipc", {"solver_order": 5})
    with pytest.raises(UsageError, match="eta"):
        get_sampler("ddim", {"eta": -1})
    with pytest.raises(UsageError, match="predict_x0"):
        get_sampler("unipc", {"predict_x0": False})
    with pytest.raises(UsageError, match="original_inference_steps"):
        get_sampler("lcm", {}).set_timesteps(60)


@pytest.mark.parametrize("steps", [0, -3, 2.5, 5000])
def test_bad_step_counts_are_usage_errors(steps):
    with pytest.raises(UsageError, match="steps"):
        get_sampler("euler", {}).set_timesteps(steps)


def test_step_before_set_timesteps_and_out_of_range_index():
    s = get_sampler("ddim", {})
    x = randn(0, (1, 4, 8, 8))
    with pytest.raises(UsageError, match="set_timesteps"):
        s.step(x, 0, x)
    s.set_timesteps(4)
    with pytest.raises(UsageError, match="outside"):
        s.step(x, 4, x)


@pytest.mark.parametrize("name", ["heun", "dpmpp_2m", "unipc"])
def test_multistep_samplers_refuse_out_of_order_steps(name):
    s = get_sampler(name, {})
    s.set_timesteps(5)
    x = randn(0, (1, 4, 8, 8))
    s.step(x * np.float32(0.1), 0, x)
    with pytest.raises(UsageError, match="expected"):
        s.step(x * np.float32(0.1), 2, x)
    s.set_timesteps(5)  # restarting is fine
    s.step(x * np.float32(0.1), 0, x)


def test_repeated_timesteps_are_driven_by_index():
    """Heun repeats every interior timestep; the index, not a lookup, picks the sigma."""
    s = get_sampler("heun", {})
    s.set_timesteps(3)
    assert s.timesteps[1] == s.timesteps[2]
    x = randn(0, (1, 4, 8, 8)) * np.float32(s.init_noise_sigma)
    assert not np.array_equal(s.scale_model_input(x, 0), s.scale_model_input(x, 1))


SAMPLERS_DIR = pathlib.Path(samplers_pkg.__file__).parent


def test_samplers_import_no_torch_or_diffusers_statically():
    banned = {"torch", "diffusers", "transformers", "tensorflow", "jax"}
    for path in sorted(SAMPLERS_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & banned, f"{path.name}:{node.lineno} imports {roots & banned}"


def test_importing_samplers_does_not_load_torch():
    code = (
        "import sys, edge_sdk.samplers as s; s.get_sampler('unipc', {}).set_timesteps(4); "
        "bad = [m for m in ('torch', 'diffusers') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
