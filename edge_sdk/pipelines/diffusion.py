"""The generation loop: noise -> [denoiser -> sampler step] x N -> decoder -> image.

Works for pixel-space and latent diffusion (unconditional or class-conditional), and one-shot
GAN generators. Which runtime and precision each component uses, whether CFG is batched, and
whether decoding is tiled, all come from a ``Plan``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.errors import CancelledError, UsageError
from edge_sdk.pipelines.result import GenerationResult, to_uint8
from edge_sdk.pipelines.sessions import Sessions
from edge_sdk.plan import Plan
from edge_sdk.samplers import apply_guidance, get_sampler, randn, sampler_for_config


@dataclass
class StepInfo:
    """What a per-step callback sees. Return False from the callback to cancel the run."""

    index: int
    total: int
    timestep: float
    sample: np.ndarray
    denoised: np.ndarray | None

    def preview(self) -> np.ndarray:
        """A cheap NHWC uint8 look at the current x0 estimate (first 3 channels, min-max scaled)."""
        x = self.denoised if self.denoised is not None else self.sample
        x = x[:, :3] if x.shape[1] >= 3 else np.repeat(x[:, :1], 3, axis=1)
        lo, hi = float(x.min()), float(x.max())
        return to_uint8(x, (lo, hi if hi > lo else lo + 1))


StepCallback = Callable[[StepInfo], "bool | None"]


class DiffusionPipeline:
    def __init__(self, bundle: Bundle, plan: Plan) -> None:
        self.bundle = bundle
        self.plan = plan
        self.model = bundle.model
        self.kind = self.model.get("kind", "pixel_diffusion")
        self.sessions = Sessions(bundle, plan)
        self.sampler_defaults = bundle.sampler

    def close(self) -> None:
        self.sessions.close()

    # -- helpers ---------------------------------------------------------------------------------
    def _denoiser_names(self) -> list[str]:
        ins, _ = self.bundle.signature("denoiser")
        return [t.name for t in ins]

    def _sample_shape(self, batch: int, height: int | None, width: int | None) -> tuple[int, ...]:
        ins, _ = self.bundle.signature("denoiser")
        c = ins[0].shape[1] if isinstance(ins[0].shape[1], int) else int(self.model.get("in_channels", 4))
        native = self.model.get("sample_size") or [s if isinstance(s, int) else 32 for s in ins[0].shape[2:]]
        down = int(self.model.get("vae_downsample", 1)) if self.kind == "latent_diffusion" else 1
        mult = int(self.model.get("spatial_multiple", 1))
        h = native[0] if height is None else height // down
        w = native[1] if width is None else width // down
        for px, cells, axis in ((height, h, "height"), (width, w, "width")):
            if px is not None and (px % down or cells % mult or cells <= 0):
                raise UsageError(f"{axis} {px} does not fit this model",
                                 hint=f"use a multiple of {down * mult} pixels")
        return (batch, c, h, w)

    def _class_labels(self, class_labels, batch: int) -> np.ndarray | None:
        if self.model.get("conditioning") != "class":
            if class_labels is not None:
                raise UsageError("this model is not class-conditional; do not pass class labels")
            return None
        n = int(self.model["num_classes"])
        if class_labels is None:
            labels = np.arange(batch) % n
        else:
            labels = np.atleast_1d(np.asarray(class_labels, dtype=np.int64))
            if labels.shape != (batch,):
                raise UsageError(f"{labels.size} class labels for a batch of {batch}")
            if labels.min() < 0 or labels.max() >= n:
                raise UsageError(f"class labels must be in 0..{n - 1}, got {labels.tolist()}")
        return labels.astype(np.int64)

    def _denoise(self, x: np.ndarray, t: float, cond: np.ndarray | None, uncond: np.ndarray | None,
                 guidance: float, rescale: float, step: int) -> np.ndarray:
        names = self._denoiser_names()
        tt = np.full((x.shape[0],), t, dtype=np.float32)

        def call(xx, ttt, cc):
            feeds = {names[0]: xx, names[1]: ttt}
            if cc is not None:
                feeds[names[2]] = cc
            return self.sessions.run("denoiser", feeds, step=step)

        if uncond is None or guidance == 1.0:
            return call(x, tt, cond)
        if self.plan.cfg == "sequential":
            out_u = call(x, tt, uncond)
            out_c = call(x, tt, cond)
        else:
            both = call(np.concatenate([x, x]), np.concatenate([tt, tt]), np.concatenate([uncond, cond]))
            out_u, out_c = np.split(both, 2)
        return apply_guidance(out_u, out_c, guidance, rescale)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        scale = float(self.model.get("latent_scale_factor", 1.0))
        shift = float(self.model.get("latent_shift_factor", 0.0))
        z = latents / scale + shift
        name = self.bundle.signature("decoder")[0][0].name
        if self.plan.decode_tiling is not None:
            from edge_sdk.pipelines.tiling import decode_tiled

            return decode_tiled(lambda tile: self.sessions.run("decoder", {name: tile}), z,
                                self.plan.decode_tiling.tile, self.plan.decode_tiling.overlap,
                                int(self.model.get("vae_downsample", 8)))
        return np.concatenate([self.sessions.run("decoder", {name: z[i:i + 1]}) for i in range(len(z))])

    # -- the loop --------------------------------------------------------------------------------
    def generate(self, *, steps: int | None = None, seed: int = 0, sampler: str | None = None,
                 guidance: float | None = None, guidance_rescale: float = 0.0,
                 class_labels: Sequence[int] | None = None, batch: int | None = None,
                 height: int | None = None, width: int | None = None,
                 callback: StepCallback | None = None) -> GenerationResult:
        timings: dict[str, float] = {}
        self.sessions.notes.clear()  # notes (e.g. an fp16 -> fp32 fallback) are per run
        self.sessions.notes.clear()  # notes (e.g. an fp16 -> fp32 fallback) are per run
        if self.kind == "gan":
            return self._generate_gan(seed=seed, batch=batch or 1, class_labels=class_labels)
        if class_labels is not None and batch is None:
            batch = len(np.atleast_1d(class_labels))
        batch = batch or 1
        if steps is not None and steps < 1:
            raise UsageError(f"--steps must be at least 1, got {steps}")
        steps = steps or int(self.sampler_defaults.get("default_steps", 20))
        config = dict(self.sampler_defaults.get("config", {}))
        name = sampler or self.sampler_defaults.get("default_sampler") or (
            sampler_for_config(config) if "_class_name" in config else "ddim")
        s = get_sampler(name, config)
        guidance = float(self.sampler_defaults.get("default_guidance", 1.0) if guidance is None else guidance)
        labels = self._class_labels(class_labels, batch)
        uncond = None
        if labels is not None and guidance != 1.0:
            null = self.model.get("null_class")
            if null is None:
                raise UsageError("this model has no null class, so guidance must be 1.0")
            uncond = np.full_like(labels, int(null))

        shape = self._sample_shape(batch, height, width)
        s.set_timesteps(steps)
        s.set_generator(np.random.Generator(np.random.PCG64(seed + 1)))
        x = randn(seed, shape) * np.float32(s.init_noise_sigma)
        t0 = time.perf_counter()
        total = len(s.timesteps)
        for i, t in enumerate(s.timesteps):
            xin = s.scale_model_input(x, i)
            out = self._denoise(xin, float(t), labels, uncond, guidance, guidance_rescale, i)
            x = s.step(out, i, x)
            if callback is not None and callback(StepInfo(i, total, float(t), x, s.last_denoised)) is False:
                raise CancelledError(f"generation cancelled by the callback at step {i + 1}/{total}")
        timings["denoise"] = time.perf_counter() - t0
        if self.kind == "latent_diffusion":
            t0 = time.perf_counter()
            raw = self.decode(x)
            timings["decode"] = time.perf_counter() - t0
            latents = x
        else:
            raw, latents = x, None
        rng = tuple(self.model.get("output_range", (-1.0, 1.0)))
        info = {"sampler": s.name, "steps": steps, "seed": seed, "guidance": guidance,
                "class_labels": None if labels is None else labels.tolist()}
        if self.sessions.notes:
            info["notes"] = list(self.sessions.notes)
        if self.sessions.notes:
            info["notes"] = list(self.sessions.notes)
        return GenerationResult(to_uint8(raw, rng), raw, latents, timings, info)

    def _generate_gan(self, *, seed: int, batch: int, class_labels) -> GenerationResult:
        ins, _ = self.bundle.signature("generator")
        zshape = tuple(self.model.get("generator_latent") or [d for d in ins[0].shape[1:]])
        z = randn(seed, (batch, *zshape))
        feeds = {ins[0].name: z}
        labels = self._class_labels(class_labels, batch)
        if labels is not None:
            feeds[ins[1].name] = labels
        t0 = time.perf_counter()
        raw = np.concatenate([self.sessions.run("generator", {k: v[i:i + 1] for k, v in feeds.items()})
                              for i in range(batch)])
        rng = tuple(self.model.get("output_range", (-1.0, 1.0)))
        return GenerationResult(to_uint8(raw, rng), raw, None, {"generate": time.perf_counter() - t0},
                                {"seed": seed})
