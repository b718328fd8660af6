"""Pure-numpy diffusion samplers that match the diffusers schedulers of the same name.

    from edge_sdk.samplers import get_sampler, randn
    s = get_sampler("dpmpp_2m", scheduler_config)   # diffusers scheduler_config.json keys
    s.set_timesteps(20)
    x = randn(seed, shape) * s.init_noise_sigma
    for i, t in enumerate(s.timesteps):
        x = s.step(model(s.scale_model_input(x, i), t), i, x)

Names: ddpm, ddim, euler, euler_ancestral, heun, dpmpp_2m, unipc, lcm; diffusers class names
(``DDIMScheduler``, ...) are accepted too, so a bundle's ``_class_name`` picks its sampler.
Seeds and batches follow the rule documented in :mod:`edge_sdk.samplers.noise`. No torch here.
"""

from __future__ import annotations

from typing import Any, Mapping

from edge_sdk.errors import UsageError
from edge_sdk.samplers.base import Sampler
from edge_sdk.samplers.ddim import DDIMSampler
from edge_sdk.samplers.ddpm import DDPMSampler
from edge_sdk.samplers.dpm_solver import DPMSolverSampler
from edge_sdk.samplers.euler import EulerSampler
from edge_sdk.samplers.euler_ancestral import EulerAncestralSampler
from edge_sdk.samplers.guidance import apply_guidance, guided_output
from edge_sdk.samplers.heun import HeunSampler
from edge_sdk.samplers.lcm import LCMSampler
from edge_sdk.samplers.noise import make_generator, randn
from edge_sdk.samplers.unipc import UniPCSampler

_SAMPLERS: dict[str, type[Sampler]] = {
    cls.name: cls
    for cls in (
        DDPMSampler,
        DDIMSampler,
        EulerSampler,
        EulerAncestralSampler,
        HeunSampler,
        DPMSolverSampler,
        UniPCSampler,
        LCMSampler,
    )
}
_BY_CLASS: dict[str, str] = {cls.diffusers_class: name for name, cls in _SAMPLERS.items()}


def available_samplers() -> list[str]:
    """The sampler names ``get_sampler`` accepts (diffusers class names work too)."""
    return list(_SAMPLERS)


def _resolve(name: str) -> type[Sampler]:
    key = name.strip()
    if key in _BY_CLASS:
        key = _BY_CLASS[key]
    key = key.lower().replace("-", "_")
    if key in _SAMPLERS:
        return _SAMPLERS[key]
    raise UsageError(
        f"unknown sampler {name!r}",
        hint=f"known samplers: {', '.join(available_samplers())}",
    )


def get_sampler(name: str, config: Mapping[str, Any] | None = None) -> Sampler:
    """A sampler by name (or diffusers class name) built from a scheduler config dict."""
    if not isinstance(name, str):
        raise UsageError(
            f"sampler name must be a string, got {type(name).__name__}",
            hint=f"known samplers: {', '.join(available_samplers())}",
        )
    return _resolve(name)(config)


def sampler_for_config(config: Mapping[str, Any], default: str | None = "ddim") -> str:
    """The sampler name a diffusers ``scheduler_config.json`` names in ``_class_name``.

    A config without ``_class_name``, or naming a scheduler with no numpy port (e.g.
    ``PNDMScheduler``), gets ``default``: DDIM runs any DDPM-trained model with the config's own
    training schedule. ``default=None`` makes that case a UsageError instead.
    """
    class_name = config.get("_class_name")
    if class_name in _BY_CLASS:
        return _BY_CLASS[class_name]
    if default is not None:
        _resolve(default)  # an unknown default is a programming error worth reporting
        return default
    raise UsageError(
        f"scheduler {class_name!r} has no numpy sampler",
        hint=f"pick one explicitly (e.g. --sampler ddim); known: {', '.join(available_samplers())}",
    )


__all__ = [
    "Sampler",
    "apply_guidance",
    "available_samplers",
    "get_sampler",
    "guided_output",
    "make_generator",
    "randn",
    "sampler_for_config",
]
