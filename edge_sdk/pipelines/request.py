"""A run's parameters, carried as one value from the CLI or the API to the pipeline.

``GenerateRequest`` is validated once, when it is made: the checks of single values (steps, guidance
rescale, batch, prompt text) live here, so the CLI, ``Generator.generate``, the
supervised child and the pipelines do not repeat them. What depends on the model (a size that is
not a multiple the model takes, guidance on an unconditional model or its range against the
bundle's default, a prompt to a class model) is the
pipeline's to check. ``pipeline.generate(steps=..., ...)`` keeps working: the keyword arguments
become a request (``GenerateRequest.of``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from edge_sdk.errors import UsageError
from edge_sdk.samplers.base import check_steps
from edge_sdk.samplers.guidance import check_rescale

# Options a one-shot generator (GAN) does not take: given to one they are a mistake worth naming.
DIFFUSION_ONLY = ("steps", "sampler", "guidance", "guidance_rescale", "prompt", "negative_prompt", "prompt_embeds",
                  "negative_prompt_embeds", "init_image", "strength", "height", "width", "deep_cache",
                  "deep_cache_branch")


def _positive_int(value: Any, what: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise UsageError(f"{what} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class GenerateRequest:
    """What to generate. ``None`` means the bundle's default (steps, sampler, guidance) or the
    model's native size; ``batch`` None means one image, or one per class label / prompt."""

    steps: int | None = None
    seed: int = 0
    sampler: str | None = None
    guidance: float | None = None
    guidance_rescale: float = 0.0
    class_labels: Any = None  # a sequence of ints
    batch: int | None = None
    height: int | None = None  # pixels
    width: int | None = None
    prompt: Any = None  # str or a sequence of str
    negative_prompt: Any = None
    prompt_embeds: Any = None  # numpy arrays, instead of prompts
    negative_prompt_embeds: Any = None
    init_image: Any = None  # img2img: a path or an HWC uint8 array
    strength: float | None = None  # img2img: (0, 1], default 0.8
    # DeepCache (edge_sdk.pipelines.deep_cache): a full UNet run every N steps, shallow ones between;
    # None: the plan's choice (off unless tuned or loaded with it), 1: off for this run.
    deep_cache: int | None = None
    deep_cache_branch: str | None = None  # "down0" (default) or "conv_in"

    def __post_init__(self) -> None:
        from edge_sdk.pipelines.text import check_prompt

        for value, what in ((self.prompt, "prompt"), (self.negative_prompt, "negative prompt")):  # text first
            if isinstance(value, str):
                check_prompt(value, what)
        if self.steps is not None:
            check_steps(self.steps)
        check_rescale(self.guidance_rescale)
        _positive_int(self.batch, "batch")
        if self.deep_cache is not None or self.deep_cache_branch is not None:
            from edge_sdk.pipelines.deep_cache import check_branch, check_interval

            if self.deep_cache is None:
                raise UsageError("a DeepCache branch needs deep_cache (the steps per full UNet run) too")
            check_interval(self.deep_cache)
            check_branch(self.deep_cache_branch)
        if self.strength is not None and self.init_image is None:  # its range: the sampler's img2img_start
            raise UsageError("strength applies to img2img only: give an init image too")

    @classmethod
    def of(cls, request: GenerateRequest | None = None, /, **kwargs: Any) -> GenerateRequest:
        """``request`` itself, or one made from ``generate``'s keyword arguments (not both)."""
        if request is not None:
            if not isinstance(request, GenerateRequest):
                raise UsageError(f"generate takes a GenerateRequest or keyword arguments, got {type(request).__name__}")
            extra = sorted(k for k, v in kwargs.items() if v is not None)
            if extra:
                raise UsageError(f"give the run's parameters in the GenerateRequest or as keywords, not both "
                                 f"({', '.join(extra)} given beside a request)")
            return request
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in kwargs if k not in known)
        if unknown:
            raise UsageError(f"unknown generate option(s): {', '.join(unknown)}",
                             hint=f"options: {', '.join(sorted(known))}")
        if kwargs.get("guidance_rescale") is None:
            kwargs.pop("guidance_rescale", None)
        if kwargs.get("seed") is None:
            kwargs.pop("seed", None)
        return cls(**kwargs)

    def diffusion_options(self) -> list[str]:
        """The diffusion-only options this request sets (for a GAN: each one an error)."""
        return [k for k in DIFFUSION_ONLY
                if (getattr(self, k) not in (None, 0.0) if k == "guidance_rescale" else getattr(self, k) is not None)]

    def images(self) -> int:
        """How many images the run makes: ``batch``, else one per class label or prompt, else 1 (for
        planning; the pipeline resolves an ambiguous mix)."""
        if self.batch is not None:
            return int(self.batch)
        if self.class_labels is not None:
            return max(1, int(np.atleast_1d(np.asarray(self.class_labels)).shape[0]))
        if self.prompt is not None and not isinstance(self.prompt, str):
            return max(1, len(list(self.prompt)))
        return 1
