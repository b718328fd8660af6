"""The sampler interface every scheduler implements, and the config handling they share.

A sampler knows a noise schedule and the update rule, nothing of models, files or runtimes:

    s = get_sampler("dpmpp_2m", scheduler_config)
    s.set_timesteps(num_steps)
    x = randn(seed, shape) * s.init_noise_sigma
    for i, t in enumerate(s.timesteps):
        out = model(s.scale_model_input(x, i), t)
        x = s.step(out, i, x)

State is found by the loop index ``i``, never by looking the timestep up (diffusers' lookups
broke when timesteps repeated). ``config`` uses diffusers' ``scheduler_config.json`` keys with
diffusers' meaning and defaults per scheduler; keys a scheduler does not take are ignored, as
diffusers' ``from_config`` ignores them.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np

from edge_sdk.errors import UsageError
from edge_sdk.samplers.noise import SeedLike, make_generator
from edge_sdk.samplers.schedule import (
    BETA_SCHEDULES,
    alphas_cumprod_for,
    check_spacing,
    img2img_start,
    make_betas,
    threshold_sample,
)

# A schedule allocates per training step; diffusers configs use 1000 (score SDE 2000). Bounded so a
# crafted config cannot make a run allocate terabytes (hardening class 7); converters use the same bound.
MAX_TRAIN_TIMESTEPS = 100_000
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# Short names people write; diffusers only knows the long ones.
_PREDICTION_ALIASES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}

# Keys every diffusers scheduler of the DDPM family takes, with the most common defaults; each
# sampler overrides the defaults that differ in its diffusers namesake.
COMMON_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
    "timestep_spacing": "linspace",
    "steps_offset": 0,
    "rescale_betas_zero_snr": False,
}


def check_steps(num_steps: object) -> None:
    """The one rule for a step count (samplers here, ``GenerateRequest`` for a run): a positive integer."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise UsageError(f"steps must be a positive integer, got {num_steps!r}")


class Sampler:
    """Base class: config resolution, the schedule, seeding, img2img bookkeeping."""

    name: ClassVar[str] = ""
    diffusers_class: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = COMMON_DEFAULTS
    prediction_types: ClassVar[tuple[str, ...]] = PREDICTION_TYPES
    # Model calls per solver step, as diffusers counts it (img2img skips whole steps).
    order: ClassVar[int] = 1
    # True when step() consumes Gaussian noise (pass ``noise=`` or call ``set_generator``).
    needs_noise: ClassVar[bool] = False
    # Sigma-parameterised samplers replace a zero terminal SNR by 2**-24 (see schedule.py).
    clamp_terminal_snr: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        if config is not None and not isinstance(config, Mapping):
            raise UsageError(
                f"sampler config must be a mapping of scheduler_config keys, got {type(config).__name__}"
            )
        cfg = dict(self.defaults)
        for key, value in (config or {}).items():
            if key in cfg:
                cfg[key] = value
        pred = _PREDICTION_ALIASES.get(cfg["prediction_type"], cfg["prediction_type"])
        if pred not in self.prediction_types:
            raise UsageError(
                f"sampler {self.name!r} does not support prediction_type {cfg['prediction_type']!r}",
                hint=f"use one of {', '.join(self.prediction_types)}",
            )
        cfg["prediction_type"] = pred
        check_spacing(cfg["timestep_spacing"])
        if cfg["trained_betas"] is None and cfg["beta_schedule"] not in BETA_SCHEDULES:
            raise UsageError(
                f"unknown beta_schedule {cfg['beta_schedule']!r} in sampler config",
                hint=f"use one of {', '.join(BETA_SCHEDULES)}",
            )
        n_train = cfg["num_train_timesteps"]
        if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) \
                or not 2 <= n_train <= MAX_TRAIN_TIMESTEPS:
            raise UsageError(f"num_train_timesteps must be an integer from 2 to {MAX_TRAIN_TIMESTEPS:,}, "
                             f"got {n_train!r}"[:300])
        self.config: dict[str, Any] = cfg
        self.prediction_type: str = pred
        self.num_train_timesteps = int(n_train)
        self.betas = make_betas(
            cfg["beta_schedule"], self.num_train_timesteps, cfg["beta_start"], cfg["beta_end"],
            cfg["trained_betas"],
        )
        if cfg["trained_betas"] is not None:
            self.num_train_timesteps = int(self.betas.shape[0])
        self.alphas_cumprod = alphas_cumprod_for(
            self.betas, bool(cfg["rescale_betas_zero_snr"]), clamp_terminal=self.clamp_terminal_snr
        )
        self.timesteps: np.ndarray = np.zeros(0, dtype=np.int64)
        self.num_steps: int | None = None
        self.init_noise_sigma: float = 1.0
        self.begin_index = 0
        self.last_denoised: np.ndarray | None = None
        self._generator: np.random.Generator | None = None

    # --- configuration -------------------------------------------------------------------
    def set_generator(self, seed: SeedLike) -> None:
        """Seed the generator that ``step`` draws from when it is given no ``noise``."""
        self._generator = make_generator(seed)

    def set_timesteps(self, num_steps: int) -> None:
        """Fill ``self.timesteps`` for ``num_steps`` steps and reset the solver state."""
        check_steps(num_steps)
        if num_steps > self.num_train_timesteps:
            raise UsageError(
                f"steps={num_steps} exceeds the {self.num_train_timesteps} timesteps the model "
                "was trained with",
                hint=f"use at most {self.num_train_timesteps} steps",
            )
        self.num_steps = int(num_steps)
        self.begin_index = 0
        self.last_denoised = None
        self._set_timesteps(self.num_steps)
        self._reset()

    def set_timesteps_img2img(self, num_steps: int, strength: float) -> int:
        """Timesteps for img2img at ``strength``; returns the loop index to start from.

        Start from ``add_noise(encoded_image, noise, start)`` and loop ``i`` from ``start`` to
        ``len(timesteps) - 1``. ``strength=1`` starts at index 0 (the image is all noise).
        """
        start = img2img_start(num_steps, strength, self.order)  # validates strength
        self.set_timesteps(num_steps)
        if start >= len(self.timesteps):
            raise UsageError(
                f"img2img strength {strength} with {num_steps} steps leaves no step to run",
                hint=f"raise strength to at least {1.0 / num_steps:.3f} or use more steps",
            )
        self.begin_index = start
        self._reset()
        return start

    # --- the loop ------------------------------------------------------------------------
    def scale_model_input(self, sample: np.ndarray, index: int) -> np.ndarray:
        """The model's input at loop index ``index`` (identity unless the sampler scales)."""
        return sample

    def step(
        self,
        model_output: np.ndarray,
        index: int,
        sample: np.ndarray,
        noise: np.ndarray | None = None,
    ) -> np.ndarray:
        """The sample after loop index ``index``; sets ``last_denoised`` (the x0 estimate)."""
        self._check_ready(index)
        out = np.asarray(model_output, dtype=np.float32)
        x = np.asarray(sample, dtype=np.float32)
        prev = self._step(out, int(index), x, noise)
        return np.asarray(prev, dtype=np.float32)

    def add_noise(self, original: np.ndarray, noise: np.ndarray, index: int) -> np.ndarray:
        """``original`` noised to the level of loop index ``index`` (img2img's start)."""
        self._check_ready(index)
        x0 = np.asarray(original, dtype=np.float32)
        n = np.asarray(noise, dtype=np.float32)
        if x0.shape != n.shape:
            raise UsageError(f"add_noise needs noise of shape {x0.shape}, got {n.shape}")
        return self._add_noise(x0, n, int(index)).astype(np.float32, copy=False)

    # --- helpers for subclasses ---------------------------------------------------------
    def _set_timesteps(self, num_steps: int) -> None:
        raise NotImplementedError

    def _step(
        self, model_output: np.ndarray, index: int, sample: np.ndarray, noise: np.ndarray | None
    ) -> np.ndarray:
        raise NotImplementedError

    def _add_noise(self, original: np.ndarray, noise: np.ndarray, index: int) -> np.ndarray:
        # DDPM-family forward process: sqrt(a) x0 + sqrt(1 - a) eps at the step's timestep.
        a = self.alphas_cumprod[int(self.timesteps[index])]
        return np.float32(a**0.5) * original + np.float32((1 - a) ** 0.5) * noise

    def _reset(self) -> None:
        """Clear multistep state (called by set_timesteps and img2img)."""

    def _check_ready(self, index: int) -> None:
        if self.num_steps is None:
            raise UsageError(
                f"sampler {self.name!r} has no timesteps", hint="call set_timesteps(steps) first"
            )
        if not 0 <= index < len(self.timesteps):
            raise UsageError(
                f"step index {index} is outside 0..{len(self.timesteps) - 1} for {self.name!r}"
            )

    def _draw_noise(self, shape: tuple[int, ...], noise: np.ndarray | None) -> np.ndarray:
        if noise is not None:
            noise = np.asarray(noise, dtype=np.float32)
            if noise.shape != shape:
                raise UsageError(f"{self.name} step needs noise of shape {shape}, got {noise.shape}")
            return noise
        if self._generator is None:
            raise UsageError(
                f"sampler {self.name!r} is stochastic and has no noise source",
                hint="call set_generator(seed) or pass noise= to step()",
            )
        return self._generator.standard_normal(shape, dtype=np.float32)

    def _clip_or_threshold(self, x0: np.ndarray) -> np.ndarray:
        """diffusers' order: dynamic thresholding wins over plain clipping."""
        cfg = self.config
        if cfg.get("thresholding"):
            return threshold_sample(x0, cfg["dynamic_thresholding_ratio"], cfg["sample_max_value"])
        if cfg.get("clip_sample"):
            r = np.float32(cfg["clip_sample_range"])
            return np.clip(x0, -r, r)
        return x0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.num_steps}, prediction_type={self.prediction_type!r})"


class SequentialSampler(Sampler):
    """A sampler whose step depends on earlier steps: calls must come in loop order."""

    def _reset(self) -> None:
        self._next_index = self.begin_index

    def _check_order(self, index: int) -> None:
        if index != self._next_index:
            raise UsageError(
                f"{self.name} is a multistep sampler: step index {index} called, "
                f"{self._next_index} expected",
                hint="call step() once per index, in order; set_timesteps() restarts",
            )
        self._next_index = index + 1
