"""One-shot GAN generators: z (one seeded row per image) [+ class labels] -> image."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.errors import BundleError, UsageError
from edge_sdk.guard.governor import activation_estimate, check_gan
from edge_sdk.pipelines.callbacks import StepCallback, StepInfo, notify
from edge_sdk.pipelines.labels import class_labels_for
from edge_sdk.pipelines.request import GenerateRequest
from edge_sdk.pipelines.result import GenerationResult, to_uint8
from edge_sdk.pipelines.seeds import RowNoise
from edge_sdk.pipelines.sessions import Sessions
from edge_sdk.planning.plan import Plan


class GanPipeline:
    def __init__(self, bundle: Bundle, plan: Plan, sessions: Sessions | None = None) -> None:
        if bundle.model.get("kind") != "gan":
            raise UsageError(f"bundle {bundle.name} is not a GAN")
        self.bundle = bundle
        self.plan = plan
        self.model = bundle.model
        self.sessions = sessions or Sessions(bundle, plan)
        self.value_range = tuple(self.model.get("output_range", (-1.0, 1.0)))

    def close(self) -> None:
        self.sessions.close()

    def latent_shape(self) -> tuple[int, ...]:
        ins, _ = self.bundle.signature("generator")
        shape = self.model.get("generator_latent") or list(ins[0].shape[1:])
        if not all(isinstance(d, int) for d in shape):
            raise BundleError(f"bundle {self.bundle.name}: the generator's z shape {shape} is not fixed",
                              hint="convert again with model['generator_latent'] set")
        return tuple(int(d) for d in shape)

    def generate(self, request: GenerateRequest | None = None, /, *, callback: StepCallback | None = None,
                 **options: Any) -> GenerationResult:
        """``batch`` images; row ``k`` is what seed ``seed + k`` gives alone. One callback (1/1).

        Takes a ``GenerateRequest`` or its fields by keyword; of those only seed, batch and class labels."""
        req = GenerateRequest.of(request, **options)
        given = req.diffusion_options()
        if given:  # diffusion-only options given to a GAN are a mistake worth naming, not something to ignore
            raise UsageError("options that do not apply to a GAN generator: " + ", ".join(given),
                             hint="a GAN makes its image in one call; pass seed, batch and class labels only")
        seed, batch, class_labels = req.seed, req.batch, req.class_labels
        self.sessions.notes.clear()
        if class_labels is not None and batch is None:
            batch = int(np.atleast_1d(np.asarray(class_labels)).shape[0])
        batch = int(batch or 1)
        ins, outs = self.bundle.signature("generator")
        # Memory governor (hardening class 7): a batch whose buffers cannot fit here is refused before z is drawn.
        image = [d for d in outs[0].shape[1:] if isinstance(d, int)]
        pixels = int(np.prod(image[-2:])) if len(image) >= 2 else 1
        check_gan(batch, int(np.prod(self.latent_shape())), int(np.prod(image)) if image else 1,
                  activations=activation_estimate(self.bundle, self.plan, pixels, 1, batch))
        noise = RowNoise(seed, batch)
        z = noise.draw(self.latent_shape())
        feeds = {ins[0].name: z}
        labels = class_labels_for(self.model, class_labels, batch)
        if labels is not None:
            if len(ins) < 2:
                raise BundleError(f"bundle {self.bundle.name}: a class-conditional generator needs a labels input")
            feeds[ins[1].name] = labels
        t0 = time.perf_counter()
        raw = self.sessions.run("generator", feeds)
        timings = {"generate": time.perf_counter() - t0}
        images = to_uint8(raw, self.value_range)
        notify(callback, StepInfo(0, 1, 0.0, raw, raw, lambda x, decode: to_uint8(x, self.value_range)))
        info: dict[str, Any] = {"seed": seed, "seeds": noise.seeds,
                                "class_labels": None if labels is None else labels.tolist()}
        if self.sessions.notes:
            info["notes"] = list(self.sessions.notes)
        return GenerationResult(images, raw, None, timings, info)
