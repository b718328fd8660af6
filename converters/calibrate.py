"""Calibration inputs from the model's own sampling trajectory (int8-static quantization).

The denoiser is run in PyTorch inside the same numpy sampler loop the device uses
(``edge_sdk.samplers``), at the step count the user will run, over a few seeds (and classes);
its inputs at every step are the denoiser's calibration set. The decoder is calibrated on the
latents that loop produces (final latents and the per-step predictions of the clean latent,
divided by the VAE's scaling factor as the pipeline does), the encoder on the images the
decoder makes from them. Components with no trajectory (a GAN generator, a text encoder) are
calibrated on draws from their own input distribution: Gaussian z, token ids in range.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from edge_sdk.converters.spec import ComponentSpec, ModelSpec

# Enough points for min/max statistics to settle, few enough that quantizing stays minutes.
MAX_SAMPLES = 48
DEFAULT_SEEDS = (0, 1, 2)


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _subsample(items: list, limit: int) -> list:
    if len(items) <= limit:
        return items
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in idx]


def _conditioning(spec: ModelSpec, denoiser: ComponentSpec, seed: int) -> dict[str, torch.Tensor]:
    """The third-and-later denoiser inputs for one seed: a class label or text embeddings."""
    names = list(denoiser.example_inputs)[2:]
    cond: dict[str, torch.Tensor] = {}
    g = torch.Generator().manual_seed(seed)
    encoded = _encode_random_prompt(spec, g) if "text_encoder" in spec.components else {}
    for name in names:
        ex = denoiser.example_inputs[name]
        if not ex.dtype.is_floating_point:
            n = spec.model.get("num_classes") or int(ex.max()) + 1
            cond[name] = torch.full(ex.shape, seed % max(int(n), 1), dtype=ex.dtype)
        elif name in encoded:  # SDXL's pooled text_embeds: the encoder's own output of that name
            cond[name] = encoded[name].to(ex.dtype)
        elif encoded and ex.ndim == 3:
            cond[name] = encoded[""].to(ex.dtype)
        else:
            cond[name] = ex + 0.1 * ex.float().std().clamp(min=1e-3) * torch.randn(ex.shape, generator=g)
    return cond


def _encode_random_prompt(spec: ModelSpec, g: torch.Generator) -> dict[str, torch.Tensor]:
    """The text encoder's outputs for random token ids in every one of its inputs (SDXL's encoder
    takes two): by output name, and its first output (the hidden states) under ""."""
    te = spec.components["text_encoder"]
    vocab = int(te.config.get("vocab_size", 0)) or None
    rnd = [torch.randint(0, vocab or int(ids.max()) + 1, ids.shape, generator=g, dtype=ids.dtype)
           for ids in te.example_inputs.values()]
    with torch.no_grad():
        out = te.module(*rnd)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    encoded = {n: o.detach() for n, o in zip(te.output_names or [], outs, strict=False)}
    encoded[""] = outs[0].detach()
    return encoded


def denoiser_trajectory(spec: ModelSpec, steps: int, seeds: tuple[int, ...] = DEFAULT_SEEDS
                        ) -> tuple[list[dict[str, torch.Tensor]], list[torch.Tensor]]:
    """(denoiser inputs at every step of every seed, latents worth decoding) at ``steps`` steps."""
    from edge_sdk.samplers import get_sampler, randn

    den = spec.components["denoiser"]
    names = list(den.example_inputs)
    sampler_cfg = spec.sampler.get("config") or {}
    name = spec.sampler.get("default_sampler") or sampler_cfg.get("_class_name") or "ddim"
    shape = tuple(den.example_inputs[names[0]].shape)
    t_dtype = den.example_inputs[names[1]].dtype
    inputs: list[dict[str, torch.Tensor]] = []
    latents: list[torch.Tensor] = []
    for seed in seeds:
        s = get_sampler(name, sampler_cfg)
        if getattr(s, "needs_noise", False):
            s.set_generator(seed + 1000)
        s.set_timesteps(steps)
        x = randn(seed, shape) * s.init_noise_sigma
        cond = _conditioning(spec, den, seed)
        for i, t in enumerate(s.timesteps):
            xin = torch.from_numpy(np.ascontiguousarray(s.scale_model_input(x, i), dtype=np.float32))
            feed = {names[0]: xin, names[1]: torch.full((shape[0],), float(t), dtype=t_dtype), **cond}
            inputs.append(feed)
            with torch.no_grad():
                out = _first(den.module(*feed.values())).float().numpy()
            x = s.step(out, i, x)
            if s.last_denoised is not None and i >= len(s.timesteps) // 2:
                latents.append(torch.from_numpy(np.asarray(s.last_denoised, dtype=np.float32)))
        latents.append(torch.from_numpy(np.asarray(x, dtype=np.float32)))
    return inputs, latents


def _draws(component: ComponentSpec, count: int) -> list[dict[str, torch.Tensor]]:
    """Inputs from the component's own input distribution (no trajectory to follow)."""
    from edge_sdk.converters.validate import validation_inputs

    return validation_inputs(component, count, seed=1234)


def attach_calibration(spec: ModelSpec, *, seeds: tuple[int, ...] = DEFAULT_SEEDS) -> None:
    """Give every component without a ``calibration`` function one that follows the trajectory."""
    cache: dict[int, tuple[list, list]] = {}

    def trajectory(steps: int) -> tuple[list, list]:
        if steps not in cache:
            cache[steps] = denoiser_trajectory(spec, steps, seeds)
        return cache[steps]

    scale = float(spec.model.get("latent_scale_factor") or 1.0)
    has_denoiser = "denoiser" in spec.components

    def for_denoiser(steps: int) -> list[dict[str, torch.Tensor]]:
        return _subsample(trajectory(steps)[0], MAX_SAMPLES)

    def decoder_latents(comp: ComponentSpec, steps: int) -> list[torch.Tensor]:
        want = tuple(next(iter(comp.example_inputs.values())).shape[1:2])
        lat = [z / scale for z in trajectory(steps)[1]]
        return [z for z in lat if tuple(z.shape[1:2]) == want]

    def for_decoder(comp: ComponentSpec) -> Callable[[int], list[dict[str, torch.Tensor]]]:
        def fn(steps: int) -> list[dict[str, torch.Tensor]]:
            name = next(iter(comp.example_inputs))
            lat = decoder_latents(comp, steps)
            return [{name: z} for z in lat] if lat else _draws(comp, 16)
        return fn

    def for_encoder(comp: ComponentSpec) -> Callable[[int], list[dict[str, torch.Tensor]]]:
        def fn(steps: int) -> list[dict[str, torch.Tensor]]:
            dec = spec.components.get("decoder")
            name = next(iter(comp.example_inputs))
            if dec is None:
                return _draws(comp, 16)
            feeds = []
            for d in dec.calibration_inputs(steps):
                with torch.no_grad():
                    img = _first(dec.module(*d.values())).clamp(-1, 1)
                feeds.append({name: img})
            return feeds
        return fn

    for role, comp in spec.components.items():
        if comp.calibration is not None:
            continue
        if role == "denoiser":
            comp.calibration = for_denoiser
        elif role == "decoder" and has_denoiser:
            comp.calibration = for_decoder(comp)
        elif role == "encoder" and has_denoiser and "decoder" in spec.components:
            comp.calibration = for_encoder(comp)
        else:
            comp.calibration = (lambda c: (lambda steps: _draws(c, 16)))(comp)
