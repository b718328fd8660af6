"""The diffusion loop: noise -> [denoiser -> sampler step] x N -> decoder -> image.

Pixel-space and latent diffusion; unconditional, class-conditional (``labels``) or text-conditioned
(``text``); txt2img or img2img (``img2img``). Which runtime and precision each component uses,
whether classifier-free guidance runs as one batch of two or as two calls, and whether decoding is
tiled, all come from the ``Plan``. Seeds follow ``edge_sdk.pipelines.seeds``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.errors import BundleError, UsageError
from edge_sdk.guard.governor import activation_estimate, check_run
from edge_sdk.pipelines.callbacks import StepCallback, StepInfo, minmax_uint8, notify
from edge_sdk.pipelines.guidance_embedding import guidance_scale_embedding
from edge_sdk.pipelines.img2img import ImageLike, encode_latents, read_image, resize, to_model_range
from edge_sdk.pipelines.labels import class_labels_for, null_labels_for
from edge_sdk.pipelines.request import GenerateRequest
from edge_sdk.pipelines.result import GenerationResult, to_uint8
from edge_sdk.pipelines.sdxl import DualTextConditioner, is_dual, time_ids
from edge_sdk.pipelines.seeds import RowNoise
from edge_sdk.pipelines.sessions import Sessions
from edge_sdk.pipelines.text import TextConditioner
from edge_sdk.planning.plan import Plan
from edge_sdk.samplers import get_sampler, guided_output, sampler_for_config

__all__ = ["DiffusionPipeline", "StepInfo", "StepCallback"]


class DiffusionPipeline:
    def __init__(self, bundle: Bundle, plan: Plan, sessions: Sessions | None = None) -> None:
        self.bundle = bundle
        self.plan = plan
        self.model = bundle.model
        self.kind = self.model.get("kind", "pixel_diffusion")
        if self.kind not in ("pixel_diffusion", "latent_diffusion"):
            raise UsageError(f"bundle {bundle.name} is a {self.kind} model, not a diffusion model",
                             hint="edge_sdk.load picks the right pipeline for it")
        self.conditioning = self.model.get("conditioning", "none")
        self.sessions = sessions or Sessions(bundle, plan)
        self.sampler_defaults = bundle.sampler
        self.text = None
        if self.conditioning == "text":
            self.text = (DualTextConditioner if is_dual(bundle) else TextConditioner)(bundle, self.sessions)
        self.value_range = tuple(self.model.get("output_range", (-1.0, 1.0)))
        den_in = bundle.signature("denoiser")[0]
        self._denoiser_inputs = [t.name for t in den_in]
        # An LCM-distilled UNet takes the guidance scale embedded (timestep_cond); CFG is off.
        self._w_dim = next((int(t.shape[1]) for t in den_in if t.name == "timestep_cond"), None)
        self._xl = "time_ids" in self._denoiser_inputs
        if self.conditioning in ("class", "text") and len(self._denoiser_inputs) < 3:
            raise BundleError(f"bundle {bundle.name}: a {self.conditioning}-conditioned denoiser needs a third input "
                              f"(it has {', '.join(self._denoiser_inputs)})", hint="convert the model again")

    def close(self) -> None:
        self.sessions.close()

    # -- shapes ----------------------------------------------------------------------------------
    @property
    def downsample(self) -> int:
        return int(self.model.get("vae_downsample", 8)) if self.kind == "latent_diffusion" else 1

    def sample_shape(self, batch: int, height: int | None, width: int | None) -> tuple[int, int, int, int]:
        """(batch, channels, h, w) of the denoiser's input for an output of height x width pixels."""
        ins, _ = self.bundle.signature("denoiser")
        c = ins[0].shape[1] if isinstance(ins[0].shape[1], int) else int(self.model.get("in_channels", 4))
        native = self.bundle.native_cells() or (1, 1)
        down, mult = self.downsample, int(self.model.get("spatial_multiple", 1))
        h = native[0] if height is None else height // down
        w = native[1] if width is None else width // down
        for px, cells, axis in ((height, h, "height"), (width, w, "width")):
            if px is not None and (px % down or cells % mult or cells <= 0):
                raise UsageError(f"{axis} {px} does not fit this model", hint=f"use a multiple of {down * mult} pixels")
        for axis, (cells, dim) in enumerate(zip((h, w), ins[0].shape[2:], strict=False)):
            if isinstance(dim, int) and cells != dim:
                raise UsageError(f"this bundle's denoiser takes a fixed size of {ins[0].shape[2]}x{ins[0].shape[3]} "
                                 f"cells; {'height' if axis == 0 else 'width'} {cells * down} px does not fit",
                                 hint=f"use {ins[0].shape[3] * down}x{ins[0].shape[2] * down} or a dynamic artifact")
        return (batch, int(c), int(h), int(w))

    # -- model calls -----------------------------------------------------------------------------
    def denoise(self, x: np.ndarray, t: float, context: np.ndarray | dict[str, np.ndarray] | None,
                step: int) -> np.ndarray:
        """One denoiser call: sample, timestep per row, and the conditioning: one array (the third
        input), or {input name: array} when the denoiser takes more (SDXL, LCM)."""
        names = self._denoiser_inputs
        feeds = {names[0]: x, names[1]: np.full((x.shape[0],), t, dtype=np.float32)}
        if isinstance(context, dict):
            feeds.update(context)
        elif context is not None:
            feeds[names[2]] = context
        return self.sessions.run("denoiser", feeds, step=step)

    def _denoise_rows(self, table: dict[str, np.ndarray]):
        """denoise(x, t, rows, step) for contexts given as row indices into ``table``: guidance
        stacks contexts along axis 0, and indices stack where a dict of inputs would not."""
        return lambda x, t, rows, step: self.denoise(x, t, {k: v[rows] for k, v in table.items()}, step)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Scaled latents -> images in the output range, one row at a time (or tiled, as planned)."""
        scale = float(self.model.get("latent_scale_factor", 1.0))
        shift = float(self.model.get("latent_shift_factor", 0.0))
        z = (latents / np.float32(scale) + np.float32(shift)).astype(np.float32)
        name = self.bundle.signature("decoder")[0][0].name
        if self.plan.decode_tiling is not None:
            from edge_sdk.pipelines.tiling import decode_tiled

            return decode_tiled(lambda tile: self.sessions.run("decoder", {name: tile}), z,
                                self.plan.decode_tiling.tile, self.plan.decode_tiling.overlap, self.downsample)
        # One row per call: the decoder's activations are the largest of a run.
        return np.concatenate([self.sessions.run("decoder", {name: z[i:i + 1]}) for i in range(len(z))])

    def preview(self, estimate: np.ndarray, decode: bool = False) -> np.ndarray:
        """NHWC uint8 of an x_0 estimate: decoded, or cheap (latent channels, pixels as they are)."""
        if self.kind == "latent_diffusion":
            if decode:
                return to_uint8(self.decode(estimate), self.value_range)
            return minmax_uint8(estimate, self.downsample)
        return to_uint8(estimate, self.value_range)

    # -- arguments -------------------------------------------------------------------------------
    def _batch_size(self, batch: int | None, class_labels: Any, prompt: Any, prompt_embeds: Any) -> int:
        implied = {}
        if class_labels is not None:
            implied["class labels"] = int(np.atleast_1d(np.asarray(class_labels)).shape[0])
        if prompt is not None and not isinstance(prompt, str):
            implied["prompts"] = len(list(prompt))
        if prompt_embeds is not None and np.ndim(prompt_embeds) == 3 and np.shape(prompt_embeds)[0] > 1:
            implied["prompt_embeds rows"] = int(np.shape(prompt_embeds)[0])
        if batch is not None:  # checked when the request was made
            return int(batch)
        sizes = set(implied.values())
        if len(sizes) > 1:
            raise UsageError(f"the batch size is ambiguous: {', '.join(f'{n} {k}' for k, n in implied.items())}")
        return sizes.pop() if sizes else 1

    def _guidance(self, guidance: float | None) -> float:
        if guidance is not None and self.conditioning == "none" and float(guidance) != 1.0:
            raise UsageError("this model is unconditional, so classifier-free guidance does not apply",
                             hint="leave guidance unset")
        g = self.sampler_defaults.get("default_guidance", 1.0) if guidance is None else guidance
        if self.conditioning == "none":
            return 1.0
        if not np.isfinite(float(g)) or float(g) < 0:
            raise UsageError(f"guidance must be a finite number >= 0, got {g}")
        return float(g)

    def _init_latents(self, init_image: ImageLike, batch: int, height: int | None,
                      width: int | None) -> tuple[np.ndarray, tuple[int, int, int, int], float]:
        """img2img's x_0 (batch rows of the encoded image) and its sample shape."""
        channels = int(self.model.get("image_channels", 3))
        image = read_image(init_image, channels)
        if height is None and width is None:
            height, width = image.shape[:2]
            try:
                shape = self.sample_shape(batch, height, width)
            except UsageError as e:
                raise UsageError(f"init image is {width}x{height}: {e.message}",
                                 hint=f"{e.hint}, or pass a size to resize it to") from None
        else:
            height = height if height is not None else image.shape[0]
            width = width if width is not None else image.shape[1]
            shape = self.sample_shape(batch, height, width)
        pixels = to_model_range(resize(image, height, width), self.value_range)
        t0 = time.perf_counter()
        x0 = encode_latents(self.bundle, self.sessions, pixels) if self.kind == "latent_diffusion" else pixels
        if x0.shape[1:] != shape[1:]:
            raise UsageError(f"the encoded init image has shape {x0.shape[1:]}, the denoiser takes {shape[1:]}")
        return np.repeat(x0, batch, axis=0), shape, time.perf_counter() - t0

    # -- the loop --------------------------------------------------------------------------------
    def generate(self, request: GenerateRequest | None = None, /, *, callback: StepCallback | None = None,
                 **options: Any) -> GenerationResult:
        """Generate ``request.images()`` images; row ``k`` is what seed ``seed + k`` gives alone.

        The run's parameters come as a ``GenerateRequest`` or as its fields by keyword (``steps``,
        ``seed``, ``sampler``, ``guidance``, ``guidance_rescale``, ``class_labels``, ``batch``,
        ``height``/``width``, ``prompt``/``negative_prompt`` or ``prompt_embeds``/
        ``negative_prompt_embeds`` for text-conditioned bundles, ``init_image`` (a path or an HWC
        uint8 array) with ``strength`` in (0, 1] for img2img, default 0.8).
        ``callback(StepInfo)`` runs after every step; returning False cancels.
        """
        req = GenerateRequest.of(request, **options)  # single values validated there, once
        steps, seed, sampler, guidance, guidance_rescale = (req.steps, req.seed, req.sampler, req.guidance,
                                                            req.guidance_rescale)
        class_labels, batch, height, width = req.class_labels, req.batch, req.height, req.width
        prompt, negative_prompt, init_image, strength = req.prompt, req.negative_prompt, req.init_image, req.strength
        prompt_embeds, negative_prompt_embeds = req.prompt_embeds, req.negative_prompt_embeds
        # DeepCache: the request's for this run (checked against the bundle), else the plan's.
        want = self.plan.components.get("denoiser")
        if req.deep_cache is not None:
            from edge_sdk.pipelines.deep_cache import with_deep_cache

            want = with_deep_cache(self.bundle, self.plan, req.deep_cache, req.deep_cache_branch).components["denoiser"]
        if want is not None:
            self.sessions.set_deep_cache("denoiser", want)
        self.sessions.begin_run()  # notes (e.g. an fp16 -> fp32 fallback) and cached features are per run
        timings: dict[str, float] = {}
        if self.conditioning != "text" and any(v is not None for v in
                                                (prompt, negative_prompt, prompt_embeds, negative_prompt_embeds)):
            raise UsageError(f"bundle {self.bundle.name} is not text-conditioned; it takes no prompt")
        batch = self._batch_size(batch, class_labels, prompt, prompt_embeds)
        steps = int(steps or self.sampler_defaults.get("default_steps", 20))
        config = dict(self.sampler_defaults.get("config", {}))
        s = get_sampler(sampler or self.sampler_defaults.get("default_sampler") or sampler_for_config(config), config)
        guidance = self._guidance(guidance)
        embedded = None
        if self._w_dim is not None:  # LCM: the scale goes into the UNet, not into CFG
            embedded, guidance = guidance, 1.0
        # Memory governor (hardening class 7): refuse a size/batch whose buffers alone cannot fit here,
        # before anything is allocated, board profile or not.
        gshape = self.sample_shape(batch, height, width)
        branches = 2 if guidance != 1.0 else 1
        check_run(batch, gshape[1], gshape[2], gshape[3], self.downsample, guided=guidance != 1.0,
                  activations=activation_estimate(self.bundle, self.plan, gshape[2] * gshape[3], self.downsample,
                                                  batch * branches))

        # Conditioning: class labels or text embeddings; the unconditional branch when guided.
        cond = uncond = labels = None
        if self.conditioning == "class":
            cond = labels = class_labels_for(self.model, class_labels, batch)
            uncond = null_labels_for(self.model, labels) if guidance != 1.0 else None
        elif class_labels is not None:
            raise UsageError("this model is not class-conditional; do not pass class labels")
        if self.text is not None:
            t0 = time.perf_counter()
            condition = self.text.condition_dual if isinstance(self.text, DualTextConditioner) else self.text.condition
            cond, uncond = condition(prompt=prompt, negative_prompt=negative_prompt, prompt_embeds=prompt_embeds,
                                     negative_prompt_embeds=negative_prompt_embeds, batch=batch,
                                     guided=guidance != 1.0)
            timings["text"] = time.perf_counter() - t0

        # Starting point: pure noise, or the init image noised to the strength's timestep.
        noise = RowNoise(seed, batch)
        if init_image is not None:
            strength = 0.8 if strength is None else float(strength)
            x0, shape, timings["encode"] = self._init_latents(init_image, batch, height, width)
            start = s.set_timesteps_img2img(steps, strength)
            x = s.add_noise(x0, noise.draw(shape[1:]), start)
        else:
            shape = self.sample_shape(batch, height, width)
            s.set_timesteps(steps)
            start = 0
            x = noise.draw(shape[1:]) * np.float32(s.init_noise_sigma)

        denoise = self.denoise
        if self._xl or embedded is not None:
            # More inputs than one context array: rows of a table, see _denoise_rows.
            branches = [uncond, cond] if uncond is not None else [cond]
            dicts = [b if isinstance(b, dict) else {self._denoiser_inputs[2]: b} for b in branches]
            if self._xl:
                ids = time_ids(shape[2] * self.downsample, shape[3] * self.downsample, batch)
                dicts = [{**d, "time_ids": ids} for d in dicts]
            if embedded is not None:
                w = guidance_scale_embedding(embedded, self._w_dim, batch)
                dicts = [{**d, "timestep_cond": w} for d in dicts]
            table = {k: np.concatenate([d[k] for d in dicts]) for k in dicts[0]}
            denoise = self._denoise_rows(table)
            cond = np.arange(batch) + (batch if uncond is not None else 0)
            uncond = np.arange(batch) if uncond is not None else None
        mode = self.plan.cfg
        total = len(s.timesteps) - start
        t0 = time.perf_counter()
        for i in range(start, len(s.timesteps)):
            t = float(s.timesteps[i])
            xin = s.scale_model_input(x, i)
            if uncond is None:
                out = denoise(xin, t, cond, i)
            else:
                out = guided_output(lambda xx, tt, cc, i=i: denoise(xx, tt, cc, i), xin, t, uncond, cond,
                                    guidance, guidance_rescale, mode=mode)
            step_noise = noise.draw(shape[1:]) if s.needs_noise else None
            x = s.step(out, i, x, noise=step_noise)
            notify(callback, StepInfo(i - start, total, t, x, s.last_denoised, self.preview))
        timings["denoise"] = time.perf_counter() - t0

        if self.kind == "latent_diffusion":
            t0 = time.perf_counter()
            raw, latents = self.decode(x), x
            timings["decode"] = time.perf_counter() - t0
        else:
            raw, latents = x, None
        info: dict[str, Any] = {"sampler": s.name, "steps": steps, "steps_run": total, "seed": seed,
                                "seeds": noise.seeds, "guidance": guidance,
                                "class_labels": None if labels is None else labels.tolist()}
        if embedded is not None:
            info["guidance_embedded"] = embedded
        if guidance_rescale:
            info["guidance_rescale"] = guidance_rescale
        if prompt is not None:
            info["prompt"] = prompt
        if negative_prompt is not None:
            info["negative_prompt"] = negative_prompt
        if init_image is not None:
            info["strength"] = strength
        deep = self.sessions.deep_cache_stats("denoiser")
        if deep is not None:
            info["deep_cache"] = deep
        if self.sessions.notes:
            info["notes"] = list(self.sessions.notes)
        return GenerationResult(to_uint8(raw, self.value_range), raw, latents, timings, info)
