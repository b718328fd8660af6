"""Pure-numpy samplers (no torch). Interface: see base.py."""

from __future__ import annotations

from edge_sdk.errors import UsageError
from edge_sdk.samplers.base import Sampler
from edge_sdk.samplers.ddim import DDIMSampler
from edge_sdk.samplers.guidance import apply_guidance
from edge_sdk.samplers.noise import randn

_SAMPLERS: dict[str, type[Sampler]] = {"ddim": DDIMSampler}
_CLASS_NAMES = {"DDIMScheduler": "ddim"}


def available_samplers() -> list[str]:
    return sorted(_SAMPLERS)


def get_sampler(name: str, config: dict | None = None) -> Sampler:
    key = _CLASS_NAMES.get(name, name)
    if key not in _SAMPLERS:
        raise UsageError(f"unknown sampler {name!r}", hint=f"known samplers: {', '.join(available_samplers())}")
    return _SAMPLERS[key](config or {})


def sampler_for_config(config: dict) -> str:
    return _CLASS_NAMES.get(config.get("_class_name", ""), "ddim")


__all__ = ["Sampler", "get_sampler", "available_samplers", "sampler_for_config", "randn", "apply_guidance"]
