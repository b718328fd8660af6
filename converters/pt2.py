"""A ``torch.export`` program saved as ``.pt2`` (``torch.export.save``): one component.

The program carries its example inputs and its symbolic shapes, so the component's inputs,
names and dynamic axes come from the file itself. The role is the file's stem when it names one
(``decoder.pt2``), else denoiser. ``torch.export.load`` reads a serialized graph and tensors, not
pickled Python objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edge_sdk.bundle import ROLES
from edge_sdk.converters.spec import ComponentSpec, ModelSpec
from edge_sdk.errors import ModelSourceError


class ExportedModule(torch.nn.Module):
    """An exported program's module that tolerates ``.eval()`` (it has no train/eval modes)."""

    def __init__(self, gm: torch.nn.Module) -> None:
        super().__init__()
        self.program = gm

    def forward(self, *args: torch.Tensor):
        return self.program(*args)

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode  # the graph's ops were fixed at export time; nothing to switch
        return self


def _axis_name(ndim: int, axis: int, input_name: str) -> str:
    if axis == 0:
        return "batch"
    if ndim == 4 and axis in (2, 3):
        return ("height", "width")[axis - 2]
    return f"{input_name}_dim{axis}"


def load_pt2(path: str | Path, *, name: str | None = None, role: str | None = None) -> ModelSpec:
    p = Path(path)
    if not p.is_file():
        raise ModelSourceError(f"{p} does not exist")
    try:
        ep = torch.export.load(str(p))
    except Exception as e:  # noqa: BLE001 - zip, version and schema errors all land here
        raise ModelSourceError(f"{p} is not a torch.export program torch {torch.__version__} can load: "
                               f"{str(e).splitlines()[0][:300] if str(e) else type(e).__name__}",
                               hint="save it with "
                                    "torch.export.save(torch.export.export(model, args), 'model.pt2')") from None
    role = role or (p.stem if p.stem in ROLES else "denoiser")
    example = ep.example_inputs
    if example is None:
        raise ModelSourceError(f"{p} carries no example inputs",
                               hint="export it with a recent torch, which stores them")
    args, kwargs = example
    if kwargs:
        raise ModelSourceError(f"{p}: keyword inputs are not supported; export with positional inputs only")
    names = list(ep.graph_signature.user_inputs)
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    inputs: dict[str, torch.Tensor] = {}
    dyn: dict[str, dict[int, str]] = {}
    for name_, t in zip(names, args, strict=False):
        if not isinstance(t, torch.Tensor):
            raise ModelSourceError(f"{p}: input {name_!r} is not a tensor")
        inputs[name_] = t
        val = placeholders[name_].meta.get("val")
        shape = val.shape if val is not None else t.shape
        dyn[name_] = {i: _axis_name(len(shape), i, name_) for i, s in enumerate(shape) if isinstance(s, torch.SymInt)}
    module = ExportedModule(ep.module())
    from edge_sdk.converters.outputs import DEFAULT_OUTPUT, default_output_dims

    out_names = [DEFAULT_OUTPUT.get(role, "output")]
    comp = ComponentSpec(role=role, module=module, example_inputs=inputs, output_names=out_names, dynamic_dims=dyn,
                         output_dynamic_dims=default_output_dims(module, inputs, out_names))
    first = next(iter(inputs.values()))
    model: dict[str, Any]
    if role == "generator":
        model = {"kind": "gan", "generator_latent": [int(s) for s in first.shape[1:]]}
    else:
        model = {"kind": "pixel_diffusion", "conditioning": "none"}
        if first.ndim == 4:
            model.update(sample_size=[int(first.shape[2]), int(first.shape[3])], in_channels=int(first.shape[1]),
                         image_channels=int(first.shape[1]))
        if len(inputs) > 2 and not list(inputs.values())[2].dtype.is_floating_point:
            model["conditioning"] = "class"
    return ModelSpec(name=name or p.stem, components={role: comp}, model=model)
