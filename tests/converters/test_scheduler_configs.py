"""scheduler_config.json as diffusers writes it: every scheduler class diffusers ships, saved with
its own save_pretrained, becomes a sampler section that Bundle.open accepts and a sampler that
matches it, or one clear ConversionError. One real convert of the issue's case (DPM-Solver's
``lambda_min_clipped: -Infinity``) opens and generates."""

from __future__ import annotations

import inspect
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_sdk.bundle import Bundle, BundleWriter
from edge_sdk.converters.scheduler_config import PORTED, SUBSTITUTES, read_scheduler_config
from edge_sdk.errors import ConversionError, ManifestError, ModelSourceError
from edge_sdk.samplers import get_sampler

# Constructor arguments for the few classes that have required ones (they are refused anyway).
_REQUIRED = {"AmusedScheduler": {"mask_token_id": 1}, "VQDiffusionScheduler": {"num_vec_classes": 4},
             "RFD4ProteinaScheduler": {"schedule_mode": "log", "noise_mode": "1/t", "tsr_k": 1.0, "tsr_sigma": 1.0}}


def _scheduler_classes() -> list[str]:
    import diffusers
    from diffusers import SchedulerMixin

    out = []
    for n in dir(diffusers):
        if n.endswith("Scheduler"):
            c = getattr(diffusers, n)
            if inspect.isclass(c) and issubclass(c, SchedulerMixin):
                out.append(n)
    return sorted(out)


CLASSES = _scheduler_classes()


def _save(name: str, folder: Path) -> Path:
    import diffusers

    getattr(diffusers, name)(**_REQUIRED.get(name, {})).save_pretrained(str(folder))
    return folder / "scheduler_config.json"


@pytest.mark.slow
def test_dpm_solver_folder_converts_opens_and_generates(hub_sd_bundle):
    from edge_sdk import api

    folder, dpm_bundle = hub_sd_bundle
    assert "-Infinity" in (folder / "scheduler" / "scheduler_config.json").read_text()
    b = Bundle.open(dpm_bundle)
    assert b.sampler["default_sampler"] == "dpmpp_2m"
    assert b.sampler["scheduler_class"] == "DPMSolverMultistepScheduler"
    assert "lambda_min_clipped" not in b.sampler["config"]  # diffusers' own -inf default: left out
    assert b.sampler["config"]["use_karras_sigmas"] is True
    with api.load(dpm_bundle) as g:
        res = g.generate(prompt="a red cube", steps=3, seed=1)
    img = np.asarray(res.images)
    assert img.dtype == np.uint8 and img.shape[-1] == 3 and img.std() > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", CLASSES)
def test_every_diffusers_scheduler_round_trips_or_is_refused(name, tmp_path, tiny_bundle):
    cfg_path = _save(name, tmp_path / "scheduler")
    if name not in PORTED and name not in SUBSTITUTES:
        with pytest.raises(ConversionError, match=f"scheduler {name} has no numpy sampler"):
            read_scheduler_config(cfg_path)
        return
    section = read_scheduler_config(cfg_path)
    # Into a real bundle's manifest (manifest.json itself is not hashed), then the reader `run` uses.
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["sampler"] = section
    (copy / "manifest.json").write_text(json.dumps(data, allow_nan=False))
    b = Bundle.open(copy)
    s = get_sampler(b.sampler["default_sampler"], b.sampler["config"])
    steps = int(b.sampler["default_steps"])
    s.set_timesteps(steps)
    if name in PORTED:
        assert type(s).diffusers_class == name
        import diffusers

        ref = getattr(diffusers, name).from_pretrained(str(tmp_path / "scheduler"))
        ref.set_timesteps(steps)
        # Same schedule as diffusers: timesteps equal to float32 rounding (Euler's are fractional).
        np.testing.assert_allclose(s.timesteps, ref.timesteps.numpy(), rtol=0, atol=1e-3)
    else:
        assert b.sampler["default_sampler"] == SUBSTITUTES[name]
        assert any(name in n for n in b.sampler["notes"])
    from edge_sdk import api

    with api.load(b) as g:  # and the device pipeline samples with it
        img = np.asarray(g.generate(steps=2, seed=0).images)
    assert img.dtype == np.uint8 and img.std() > 0


def _write(tmp_path: Path, cfg: dict) -> Path:
    p = tmp_path / "scheduler_config.json"
    p.write_text(json.dumps(cfg))
    return p


@pytest.mark.parametrize(("cfg", "field", "what"), [
    ({"_class_name": "DDIMScheduler", "beta_end": float("nan")}, "beta_end", "not a finite number"),
    ({"_class_name": "DDIMScheduler", "beta_end": float("inf")}, "beta_end", "not a finite number"),
    ({"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": float("inf")}, "lambda_min_clipped",
     "not a finite number"),
    ({"_class_name": "DDIMScheduler", "beta_end": 1.5}, "beta_end", "outside"),
    ({"_class_name": "DDIMScheduler", "num_train_timesteps": 10**9}, "num_train_timesteps", "outside"),
    ({"_class_name": "DDIMScheduler", "num_train_timesteps": 1000.5}, "num_train_timesteps", "integer"),
    ({"_class_name": "DDIMScheduler", "beta_start": "0.1"}, "beta_start", "must be a number"),
    ({"_class_name": "DDIMScheduler", "beta_start": 0.02, "beta_end": 0.01}, "beta_start", "greater than"),
    ({"_class_name": "DDIMScheduler", "prediction_type": 3}, "prediction_type", "must be a string"),
    ({"_class_name": "DDIMScheduler", "x": {"nested": 1}}, "x", "not a scheduler setting"),
    ({"_class_name": "DDIMScheduler", "trained_betas": [0.1, 2.0]}, "trained_betas", r"\(0, 1\)"),
    ({"_class_name": ["DDIMScheduler"]}, "_class_name", "must name"),
])
def test_bad_scheduler_config_is_one_error_naming_file_and_field(tmp_path, cfg, field, what):
    p = _write(tmp_path, cfg)
    with pytest.raises(ModelSourceError, match=what) as e:
        read_scheduler_config(p)
    assert e.value.message.startswith(f"{p}: field {field}:")


def test_legacy_keys_and_nulls_are_normalised(tmp_path):
    p = _write(tmp_path, {"_class_name": "DDPMScheduler", "predict_epsilon": False, "tensor_format": "pt",
                          "trained_betas": None, "num_train_timesteps": 100})
    s = read_scheduler_config(p)
    assert s["config"] == {"prediction_type": "sample", "trained_betas": None, "num_train_timesteps": 100}
    assert s["default_sampler"] == "ddpm"
    assert get_sampler("ddpm", s["config"]).prediction_type == "sample"


def test_switched_on_option_the_sampler_lacks_is_refused(tmp_path):
    p = _write(tmp_path, {"_class_name": "DPMSolverMultistepScheduler", "use_lu_lambdas": True})
    with pytest.raises(ConversionError, match="does not implement use_lu_lambdas = true"):
        read_scheduler_config(p)


def test_not_json_and_huge_files_are_refused(tmp_path):
    p = tmp_path / "scheduler_config.json"
    p.write_text("{not json")
    with pytest.raises(ModelSourceError, match="not valid JSON"):
        read_scheduler_config(p)
    p.write_text(" " * (1024 * 1024 + 1))
    with pytest.raises(ModelSourceError, match="byte limit"):
        read_scheduler_config(p)


def test_writer_never_publishes_a_manifest_the_reader_refuses(tmp_path):
    """The bug's root: the writer must open what it wrote with the reader before publishing."""
    target = tmp_path / "b"
    with pytest.raises(ManifestError, match="not a JSON number"):
        with BundleWriter(target, name="x") as w:
            w.sampler = {"config": {"lambda_min_clipped": -math.inf}}
            d = w.artifact_dir("generator", "onnx", "fp32")
            (d / "m.onnx").write_bytes(b"0")
            from edge_sdk.manifest import TensorSpec

            w.add_component("generator", [TensorSpec("z", "float32", (1, 4))],
                            [TensorSpec("image", "float32", (1, 3, 4, 4))])
            w.add_artifact("generator", "onnx", "fp32", d / "m.onnx")
            w.model = {"kind": "gan"}
            w.commit()
    assert not target.exists()
