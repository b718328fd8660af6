"""Model sources: a ``module:factory`` entry point, an ``nn.Module`` with example inputs (Python
API), a ``.pt2`` torch.export program (``pt2.py``), or a local diffusers folder
(``diffusers_folder.py``). Weights are never unpickled as code: ``load_weights`` reads safetensors
or ``torch.load(weights_only=True)``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from edge_sdk.converters.outputs import DEFAULT_OUTPUT, default_output_dims
from edge_sdk.converters.spec import ComponentSpec, ModelSpec
from edge_sdk.errors import ModelSourceError

# The DDPM training schedule most models use; a factory that trained otherwise returns a ModelSpec.
DEFAULT_SAMPLER = {"default_sampler": "ddim", "default_steps": 20, "default_guidance": 1.0,
                   "config": {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
                              "beta_schedule": "linear", "prediction_type": "epsilon"}}
KINDS = ("generator", "denoiser")


def load_entry_point(ref: str) -> Any:
    """Import ``package.module:callable`` (a file path ``path/to/file.py:callable`` works too)."""
    if ":" not in ref:
        raise ModelSourceError(f"bad entry point {ref!r}", hint="write it as module.path:factory_function")
    mod_name, _, attr = ref.rpartition(":")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name).resolve()
            if not path.is_file():
                raise ModelSourceError(f"entry point file {mod_name} does not exist")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        else:
            if "" not in sys.path and "." not in sys.path:
                sys.path.insert(0, "")  # like `python -m`, a module in the working folder is found
            module = importlib.import_module(mod_name)
    except ModelSourceError:
        raise
    except ImportError as e:
        raise ModelSourceError(f"cannot import {mod_name!r} for entry point {ref!r}: {e}",
                               hint="check the module path and that its folder is importable") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ModelSourceError(f"module {mod_name!r} has no attribute {attr!r}") from None


def default_dynamic_dims(inputs: Mapping[str, torch.Tensor]) -> dict[str, dict[int, str]]:
    """Batch on axis 0 of every input; height and width on the last two axes of 4-D inputs."""
    dims: dict[str, dict[int, str]] = {}
    for name, t in inputs.items():
        d: dict[int, str] = {}
        if t.ndim >= 1:
            d[0] = "batch"
        if t.ndim == 4:
            d[2], d[3] = "height", "width"
        dims[name] = d
    return dims


def component_from(module: torch.nn.Module, example_inputs: Any, *, role: str = "denoiser",
                   output_names: list[str] | None = None, **kwargs: Any) -> ComponentSpec:
    if not isinstance(module, torch.nn.Module):
        raise ModelSourceError(f"expected a torch.nn.Module for {role}, got {type(module).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        example_inputs = {f"input_{i}": t for i, t in enumerate(example_inputs)}
    if not isinstance(example_inputs, Mapping) or not all(isinstance(t, torch.Tensor) for t in example_inputs.values()):
        raise ModelSourceError(f"{role}: example inputs must be a tensor, a tuple of tensors or a dict name -> tensor")
    module = module.eval()
    names = output_names or [DEFAULT_OUTPUT.get(role, "output")]
    dyn = kwargs.pop("dynamic_dims", None) or default_dynamic_dims(example_inputs)
    out_dyn = kwargs.pop("output_dynamic_dims", None) or default_output_dims(module, example_inputs, names)
    return ComponentSpec(role=role, module=module, example_inputs=dict(example_inputs), output_names=names,
                         dynamic_dims=dyn, output_dynamic_dims=out_dyn, **kwargs)


def spec_from_factory_result(result: Any, *, name: str, kind: str | None = None) -> ModelSpec:
    """Accept what a factory returns: a ModelSpec, (module, example_inputs), or a dict of both.

    A bare module is a one-shot generator (GAN) when it takes one input (no timestep) or when
    ``kind="generator"``; else a pixel-space denoiser. A generator's image channels come from its
    output, never from its latent ``z``."""
    if isinstance(result, ModelSpec):
        return result
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module):
        module, example = result
        if (kind or _guess_kind(module, example)) == "generator":
            comp = component_from(module, example, role="generator")
            return ModelSpec(name=name, components={"generator": comp}, model=_gan_model(comp))
        comp = component_from(module, example)
        return ModelSpec(name=name, components={"denoiser": comp}, model=_pixel_model(comp), sampler=DEFAULT_SAMPLER)
    raise ModelSourceError(
        f"the factory returned {type(result).__name__}",
        hint="return (model, example_inputs) or an edge_sdk.converters.spec.ModelSpec")


def _guess_kind(module: torch.nn.Module, example: Any) -> str:
    """A generator takes one input (no timestep) and returns something shaped unlike it (an image
    from a latent z); a one-input module returning its input's shape stays a denoiser, as before."""
    if isinstance(example, torch.Tensor):
        example = (example,)
    if isinstance(example, Mapping):
        example = tuple(example.values())
    if not isinstance(example, (tuple, list)) or len(example) != 1 or not isinstance(example[0], torch.Tensor):
        return "denoiser"
    try:
        with torch.no_grad():
            out = module.eval()(example[0])
    except Exception as e:  # noqa: BLE001 - the user's forward; its error is the useful part
        raise ModelSourceError(f"the factory's model failed on its example input: {type(e).__name__}: {e}") from None
    out = out[0] if isinstance(out, (tuple, list)) and out else out
    return "generator" if isinstance(out, torch.Tensor) and tuple(out.shape) != tuple(example[0].shape) else "denoiser"


def _gan_model(comp: ComponentSpec) -> dict[str, Any]:
    z = next(iter(comp.example_inputs.values()))
    with torch.no_grad():
        out = comp.module(*comp.example_inputs.values())
    out = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        raise ModelSourceError(
            f"generator: its output must be an image batch [B, C, H, W], got "
            f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}",
            hint="return the image tensor from forward (or use --kind denoiser)")
    channels = int(out.shape[1])
    if not 1 <= channels <= 4:
        raise ModelSourceError(f"generator: its output has {channels} channels; an image has 1 to 4",
                               hint="the generator must return images [B, C, H, W] with C in 1..4")
    if not z.dtype.is_floating_point:
        raise ModelSourceError(f"generator: its first input must be a float latent z, got {z.dtype}")
    return {"kind": "gan", "generator_latent": [int(s) for s in z.shape[1:]], "image_channels": channels,
            "output_range": [-1.0, 1.0]}


def _pixel_model(comp: ComponentSpec) -> dict[str, Any]:
    sample = next(iter(comp.example_inputs.values()))
    return {"kind": "pixel_diffusion", "conditioning": "none",
            "sample_size": [int(sample.shape[2]), int(sample.shape[3])],
            "in_channels": int(sample.shape[1]), "image_channels": int(sample.shape[1])}


def load_weights(module: torch.nn.Module, path: str | Path, *, strict: bool = True) -> torch.nn.Module:
    """Load a state dict into ``module`` from safetensors or a weights-only torch checkpoint."""
    p = Path(path)
    if not p.is_file():
        raise ModelSourceError(f"weights file {p} does not exist")
    # One safe loader for the whole SDK (edge_sdk.converters.checkpoints): safetensors after a header check,
    # else torch.load(weights_only=True); a pickle that tries to run code is a ModelSourceError.
    from edge_sdk.converters.checkpoints import load_state_dict

    state = load_state_dict(p)
    try:
        module.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise ModelSourceError(f"weights in {p} do not fit the model: {str(e).splitlines()[0][:300]}") from None
    return module


def load_source(source: Any, *, name: str | None = None, variant: str | None = None,
                kind: str | None = None, loras: list | None = None, vae: str | Path | None = None,
                tiny_vae: str | Path | None = None) -> ModelSpec:
    """Resolve whatever the user gave: an entry point string, a .pt2 file, a diffusers folder,
    a ModelSpec, or a (module, example_inputs) pair.

    ``variant`` (diffusers folders): the weight variant to load (``fp16``, ...). ``kind``
    (factories returning ``(module, example_inputs)``): ``generator`` or ``denoiser``, instead of
    telling them apart by the number of inputs."""
    if kind is not None and kind not in KINDS:
        from edge_sdk.errors import UsageError

        raise UsageError(f"unknown kind {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    folder = isinstance(source, (str, Path)) and Path(str(source)).is_dir()
    folder_only = [n for n, v in (("--variant", variant), ("--lora", loras), ("--vae", vae),
                                          ("--tiny-vae", tiny_vae)) if v]
    if folder_only and not folder:
        from edge_sdk.errors import UsageError

        raise UsageError(f"{folder_only[0]} applies to diffusers folders only")
    if isinstance(source, ModelSpec):
        return source
    if isinstance(source, tuple):
        return spec_from_factory_result(source, name=name or "model", kind=kind)
    if isinstance(source, (str, Path)):
        text = str(source)
        path = Path(text)
        from edge_sdk.converters.folder_support import check_single_file

        check_single_file(path)
        if path.suffix == ".pt2" and path.exists():
            from edge_sdk.converters.pt2 import load_pt2

            return load_pt2(path, name=name)
        if path.is_dir():
            from edge_sdk.converters.diffusers_folder import is_diffusers_folder, load_diffusers_folder

            if is_diffusers_folder(path):
                return load_diffusers_folder(path, name=name, variant=variant, loras=loras, vae_folder=vae,
                                             tiny_vae_folder=tiny_vae)
            raise ModelSourceError(f"{path} is a folder without model_index.json",
                                   hint="give a diffusers-style folder (save_pretrained), a .pt2 file "
                                        "or module:factory")
        if path.suffix == ".pt2":
            raise ModelSourceError(f"{path} does not exist")
        if ":" in text and not Path(text).exists():
            factory = load_entry_point(text)
            try:
                result = factory()
            except Exception as e:
                raise ModelSourceError(f"factory {text} raised {type(e).__name__}: {e}") from None
            return spec_from_factory_result(result, name=name or text.rpartition(":")[2], kind=kind)
        raise ModelSourceError(f"cannot tell what kind of model source {text!r} is",
                               hint="give module:factory, a .pt2 file or a diffusers folder")
    raise ModelSourceError(f"unsupported model source of type {type(source).__name__}")
