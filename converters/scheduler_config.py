"""scheduler_config.json as diffusers writes it -> the bundle's ``sampler`` section.

diffusers writes what Python's json writes: ``-Infinity`` (``lambda_min_clipped``), ``null``,
lists, and keys of older releases. The manifest reader refuses non-finite numbers, so this module
reads the file leniently, checks every field (types, finite bounds, caps) and writes out only what
the reader accepts and the numpy sampler understands. One error names the file and the field.

Scheduler classes map to our numpy samplers: the eight with a port map to themselves; a few
DDPM-family schedulers with no port (PNDM, LMS, KDPM2, DEIS, ...) run with the closest port on the
same training schedule, and the bundle records which class the folder named. Schedulers of another
family (flow matching, EDM, VQ, score SDE, inverse/inpainting schedulers) are a ConversionError.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Any

from edge_sdk.errors import ConversionError, EdgeSDKError, ModelSourceError

# diffusers class -> our sampler, for the classes with a numpy port.
PORTED = {"DDIMScheduler": "ddim", "DDPMScheduler": "ddpm", "EulerDiscreteScheduler": "euler",
          "EulerAncestralDiscreteScheduler": "euler_ancestral", "HeunDiscreteScheduler": "heun",
          "DPMSolverMultistepScheduler": "dpmpp_2m", "UniPCMultistepScheduler": "unipc", "LCMScheduler": "lcm"}
# DDPM-trained schedulers with no port: the closest port, same betas and prediction type.
SUBSTITUTES = {"PNDMScheduler": "ddim", "DDIMParallelScheduler": "ddim", "DDPMParallelScheduler": "ddpm",
               "LMSDiscreteScheduler": "euler", "KDPM2DiscreteScheduler": "heun",
               "KDPM2AncestralDiscreteScheduler": "euler_ancestral", "DEISMultistepScheduler": "unipc",
               "DPMSolverSinglestepScheduler": "dpmpp_2m", "SASolverScheduler": "dpmpp_2m",
               "TCDScheduler": "lcm"}
DEFAULT_STEPS = {"lcm": 4}
# What a substitute takes from the original's config: the training schedule and the settings with
# the same meaning in both; solver-specific keys (SA-Solver's algorithm_type, ...) would mislead it.
_SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                  "prediction_type", "timestep_spacing", "steps_offset", "rescale_betas_zero_snr",
                  "set_alpha_to_one", "clip_sample", "clip_sample_range", "thresholding", "sample_max_value",
                  "dynamic_thresholding_ratio", "use_karras_sigmas", "original_inference_steps",
                  "timestep_scaling")

MAX_CONFIG_BYTES = 1024 * 1024
MAX_KEYS = 60  # the manifest allows 64 in sampler.config
MAX_TRAIN_TIMESTEPS = 100_000  # diffusers' own configs use 1000 (score SDE 2000)
MAX_LIST = MAX_TRAIN_TIMESTEPS
MAX_STRING = 200
# Keys of older diffusers releases: old name -> (new name, value mapping or None to copy).
_LEGACY = {"predict_epsilon": ("prediction_type", {True: "epsilon", False: "sample"})}
_DROPPED_LEGACY = ("tensor_format",)  # numpy/pt switch of diffusers < 0.3; means nothing now

_INT_BOUNDS = {"num_train_timesteps": (2, MAX_TRAIN_TIMESTEPS), "steps_offset": (0, MAX_TRAIN_TIMESTEPS),
               "solver_order": (1, 3), "original_inference_steps": (1, MAX_TRAIN_TIMESTEPS)}
_FLOAT_BOUNDS = {"beta_start": (0.0, 1.0), "beta_end": (0.0, 1.0), "sample_max_value": (0.0, 1e6),
                 "dynamic_thresholding_ratio": (0.0, 1.0), "timestep_scaling": (0.0, 1e6),
                 "clip_sample_range": (0.0, 1e6), "lambda_min_clipped": (-1e6, 1e6),
                 "sigma_min": (0.0, 1e6), "sigma_max": (0.0, 1e6), "shift": (0.0, 1e6), "eta": (0.0, 1e6)}
_STRINGS = ("beta_schedule", "prediction_type", "timestep_spacing", "algorithm_type", "solver_type",
            "final_sigmas_type", "variance_type", "timestep_type", "interpolation_type")


def _fail(path: Path, field: str | None, msg: str, hint: str | None = None) -> ModelSourceError:
    where = f"{path}: field {field}" if field else str(path)
    return ModelSourceError(f"{where}: {msg}", hint=hint or "fix the value, or save the scheduler again "
                            "with diffusers' save_pretrained")


def read_raw(path: Path) -> dict[str, Any]:
    """The file as a dict; ``-Infinity``/``Infinity``/``NaN`` become floats (checked later)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelSourceError(f"{path} is missing") from None
    if size > MAX_CONFIG_BYTES:
        raise _fail(path, None, f"{size} bytes, over the {MAX_CONFIG_BYTES} byte limit for a scheduler config")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"), parse_constant=float)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _fail(path, None, f"not valid JSON ({e})".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise _fail(path, None, f"must hold a JSON object, got {type(data).__name__}")
    return data


def _diffusers_default(class_name: str, key: str) -> Any:
    """The default diffusers' own ``__init__`` gives ``key`` (inspect.Parameter.empty if none)."""
    try:
        import diffusers

        cls = getattr(diffusers, class_name)
        return inspect.signature(cls.__init__).parameters[key].default
    except (ImportError, AttributeError, KeyError, TypeError, ValueError):
        return inspect.Parameter.empty


def _same_nonfinite(a: float, b: Any) -> bool:
    return isinstance(b, float) and math.isinf(a) and math.isinf(b) and (a > 0) == (b > 0)


def _check_number(path: Path, key: str, value: Any) -> None:
    if key in _INT_BOUNDS:
        lo, hi = _INT_BOUNDS[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, key, f"must be an integer, got {value!r}")
        if not lo <= value <= hi:
            raise _fail(path, key, f"{value} is outside [{lo}, {hi}]")
    elif key in _FLOAT_BOUNDS and value is not None:
        lo, hi = _FLOAT_BOUNDS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(path, key, f"must be a number, got {value!r}")
        if not lo <= value <= hi:
            raise _fail(path, key, f"{value} is outside [{lo}, {hi}]")


def _check_value(path: Path, key: str, value: Any) -> Any:
    """A JSON scalar, or a flat list of them, within the caps; nested objects are refused."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(path, key, f"{value} is not a finite number")
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise _fail(path, key, f"a string of {len(value)} characters (at most {MAX_STRING})")
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, list):
        if len(value) > MAX_LIST:
            raise _fail(path, key, f"a list of {len(value)} items (at most {MAX_LIST})")
        for i, item in enumerate(value):
            _check_value(path, f"{key}[{i}]", item)
            if isinstance(item, list):
                raise _fail(path, f"{key}[{i}]", "nested lists are not a scheduler setting")
        return value
    raise _fail(path, key, f"a {type(value).__name__} is not a scheduler setting")


def normalise(raw: dict[str, Any], path: Path) -> tuple[str, dict[str, Any], list[str]]:
    """(class name, the config the manifest stores, notes) from a raw scheduler_config dict."""
    class_name = raw.get("_class_name", "DDIMScheduler")
    if not isinstance(class_name, str) or not class_name or len(class_name) > MAX_STRING:
        raise _fail(path, "_class_name", f"must name a diffusers scheduler class, got {class_name!r}")
    notes: list[str] = []
    config: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key.startswith("_"):
            continue  # _class_name, _diffusers_version: recorded elsewhere or meaningless here
        if key in _DROPPED_LEGACY:
            notes.append(f"dropped the legacy key {key!r}")
            continue
        if key in _LEGACY:
            new, mapping = _LEGACY[key]
            if not isinstance(value, bool):
                raise _fail(path, key, f"must be true or false, got {value!r}")
            if new not in raw:
                config[new] = mapping[value] if mapping else value
                notes.append(f"legacy {key}={json.dumps(value)} read as {new}={json.dumps(config[new])}")
            continue
        if (isinstance(value, float) and math.isinf(value)
                and _same_nonfinite(value, _diffusers_default(class_name, key))):
            # diffusers' own default written out (e.g. lambda_min_clipped=-inf, "no clipping"):
            # leaving the key out gives the sampler the same default.
            continue
        config[key] = _check_value(path, key, value)
        _check_number(path, key, value)
    for key in _STRINGS:
        if config.get(key) is not None and not isinstance(config[key], str):
            raise _fail(path, key, f"must be a string, got {config[key]!r}")
    betas = config.get("trained_betas")
    if betas is not None:
        if not isinstance(betas, list) or not betas or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0 < b < 1 for b in betas):
            raise _fail(path, "trained_betas", "must be null or a non-empty list of numbers in (0, 1)")
    if "beta_start" in config and "beta_end" in config and config["beta_start"] > config["beta_end"]:
        raise _fail(path, "beta_start", f"{config['beta_start']} is greater than beta_end {config['beta_end']}")
    if len(config) > MAX_KEYS:
        raise _fail(path, None, f"{len(config)} settings, more than the {MAX_KEYS} a bundle records")
    return class_name, config, notes


def sampler_name(class_name: str, config: dict[str, Any], path: Path) -> tuple[str, str | None]:
    """(our sampler, a note if it stands in for a scheduler with no port); ConversionError if none fits."""
    if class_name in PORTED:
        return PORTED[class_name], None
    if class_name in SUBSTITUTES:
        name = SUBSTITUTES[class_name]
        return name, f"{class_name} has no numpy port; the bundle samples with {name} on the same training schedule"
    raise ConversionError(
        f"{path}: scheduler {class_name} has no numpy sampler in edge-sdk (not a DDPM-trained schedule we can "
        "run: flow matching, EDM, VQ, score SDE and inverse/inpainting schedulers are not supported)",
        hint="if the model is DDPM-trained, save a supported scheduler into scheduler/ (e.g. "
             "DDIMScheduler.from_config(old.config).save_pretrained(folder / 'scheduler')); supported: "
             + ", ".join(sorted(PORTED) + sorted(SUBSTITUTES)))


def check_sampler(sampler: dict[str, Any], where: str) -> None:
    """Build the sampler exactly as ``run`` does and set its default steps: a config it refuses is
    a convert-time error, not a bundle that cannot run."""
    from edge_sdk.samplers import get_sampler

    name = sampler.get("default_sampler") or "ddim"
    try:
        s = get_sampler(name, sampler.get("config") or {})
        s.set_timesteps(int(sampler.get("default_steps") or 20))
    except EdgeSDKError as e:
        raise ConversionError(f"{where}: the {name} sampler refuses this scheduler config: {e.message}",
                              hint=e.hint or "fix the scheduler config") from None
    # A switched-on option the sampler does not implement (use_lu_lambdas, use_flow_sigmas, ...)
    # would be ignored silently and sample a different schedule than diffusers does.
    unknown = sorted(k for k, v in (sampler.get("config") or {}).items() if v is True and k not in s.config)
    if unknown:
        raise ConversionError(f"{where}: the {name} sampler does not implement {', '.join(unknown)} = true",
                              hint="set it to false in scheduler_config.json if the model allows, or use "
                                   "diffusers for this scheduler setting")


def read_scheduler_config(path: str | Path) -> dict[str, Any]:
    """The manifest's ``sampler`` section for a diffusers ``scheduler_config.json``."""
    path = Path(path)
    class_name, config, notes = normalise(read_raw(path), path)
    name, note = sampler_name(class_name, config, path)
    if note:
        notes.append(note)
        config = {k: v for k, v in config.items() if k in _SCHEDULE_KEYS}
    sampler: dict[str, Any] = {"config": config, "default_sampler": name,
                               "default_steps": DEFAULT_STEPS.get(name, 20), "scheduler_class": class_name}
    if notes:
        sampler["notes"] = notes
    check_sampler(sampler, str(path))
    return sampler
