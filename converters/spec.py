"""What a converter consumes: a model split into components, each with example inputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edge_sdk.manifest import TensorSpec

_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.int64: "int64", torch.int32: "int32",
           torch.uint8: "uint8", torch.bool: "bool"}


@dataclass
class ComponentSpec:
    """One exportable network.

    ``example_inputs`` are ordered by the module's forward arguments; ``dynamic_dims`` names the
    axes that may change at run time ({input: {axis: name}}); ``calibration`` yields input dicts
    from the model's own sampling trajectory, for int8 static quantization.
    """

    role: str
    module: torch.nn.Module
    example_inputs: dict[str, torch.Tensor]
    output_names: list[str]
    dynamic_dims: dict[str, dict[int, str]] = field(default_factory=dict)
    output_dynamic_dims: dict[str, dict[int, str]] = field(default_factory=dict)
    extra_files: dict[str, Path] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    # steps -> input dicts gathered along the model's own sampling trajectory at that step count.
    calibration: Callable[[int], list[dict[str, torch.Tensor]]] | None = None
    # variant -> another network with the same inputs and outputs, converted as that variant of
    # this component (e.g. "tiny": a TAESD decoder the planner may pick on small boards).
    alternatives: dict[str, ComponentSpec] = field(default_factory=dict)
    _calibration_cache: dict[int, list[dict[str, torch.Tensor]]] = field(default_factory=dict, repr=False)

    def calibration_inputs(self, steps: int) -> list[dict[str, torch.Tensor]]:
        """Calibration input dicts for int8-static (computed once per step count, shared by formats)."""
        if steps not in self._calibration_cache:
            if self.calibration is None:
                from edge_sdk.errors import ConversionError

                raise ConversionError(f"{self.role}: int8-static needs calibration inputs and this component has none",
                                      hint="give the component a calibration function, or use int8-weight")
            data = self.calibration(steps)
            if not data:
                from edge_sdk.errors import ConversionError

                raise ConversionError(f"{self.role}: the calibration function returned no inputs")
            self._calibration_cache[steps] = [{k: v.detach() for k, v in d.items()} for d in data]
        return self._calibration_cache[steps]

    def input_specs(self) -> list[TensorSpec]:
        out = []
        for name, t in self.example_inputs.items():
            dyn = self.dynamic_dims.get(name, {})
            out.append(TensorSpec(name, _DTYPES[t.dtype], tuple(dyn.get(i, int(s)) for i, s in enumerate(t.shape))))
        return out

    def output_specs(self) -> list[TensorSpec]:
        with torch.no_grad():
            outs = self.module(*self.example_inputs.values())
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        specs = []
        for name, t in zip(self.output_names, outs, strict=False):
            dyn = self.output_dynamic_dims.get(name, {})
            specs.append(TensorSpec(name, _DTYPES[t.dtype], tuple(dyn.get(i, int(s)) for i, s in enumerate(t.shape))))
        return specs

    def parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


@dataclass
class ModelSpec:
    """A whole generative model: its components plus the manifest's model and sampler sections."""

    name: str
    components: dict[str, ComponentSpec]
    model: dict[str, Any]
    sampler: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
