"""What edge-sdk cannot convert yet, said before any loader or exporter runs: one error naming the
component and what to do, never a traceback from inside diffusers or an exporter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge_sdk.errors import ConversionError, ModelSourceError

SINGLE_FILE_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth", ".bin")
DENOISERS = ("UNet2DConditionModel", "UNet2DModel")
_TRANSFORMER_HINT = ("edge-sdk converts UNet denoisers (SD 1.x/2.x/SDXL, UNet2DModel); diffusion transformers "
                     "(SD3, Flux, PixArt, ...) are not supported yet")


def _class_of(root: Path, index: dict[str, Any], part: str) -> str | None:
    entry = index.get(part)
    if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str):
        return entry[1]
    cfg = root / part / "config.json"
    if cfg.is_file():
        try:
            name = json.loads(cfg.read_text()).get("_class_name")
        except (ValueError, UnicodeDecodeError, AttributeError):
            return None
        return name if isinstance(name, str) else None
    return None


def check_folder(root: Path, index: dict[str, Any]) -> None:
    """Refuse folders whose denoiser edge-sdk has no export path for."""
    if "controlnet" in index or (root / "controlnet").is_dir():
        raise ConversionError(
            f"{root}: component controlnet ({_class_of(root, index, 'controlnet') or 'ControlNetModel'}) is not "
            "supported: edge-sdk has no ControlNet conditioning path yet",
            hint="convert the base model folder without controlnet/ (and drop it from model_index.json)")
    if "transformer" in index or (root / "transformer").is_dir():
        cls = _class_of(root, index, "transformer") or "a transformer"
        raise ConversionError(f"{root}: component transformer ({cls}) is not supported: {_TRANSFORMER_HINT}",
                              hint="convert a UNet-based checkpoint (unet/ folder) instead")
    if "prior" in index or "decoder" in index and "unet" not in index:
        raise ConversionError(f"{root}: a multi-stage pipeline ({index.get('_class_name', 'prior/decoder')}) is not "
                              "supported", hint="convert a single-stage UNet checkpoint")
    if "unet" not in index and not (root / "unet").is_dir():
        raise ModelSourceError(f"{root}: model_index.json names no unet (the denoiser)",
                               hint="give a Stable-Diffusion-style folder with unet/")
    cls = _class_of(root, index, "unet")
    if cls is not None and cls not in DENOISERS:
        what = _TRANSFORMER_HINT if "Transformer" in cls else f"supported denoisers: {', '.join(DENOISERS)}"
        raise ConversionError(f"{root}: component unet ({cls}) is not supported: {what}",
                              hint="convert a folder whose unet/ is a UNet2DConditionModel or UNet2DModel")


def check_single_file(path: Path) -> None:
    """A single-file checkpoint (.ckpt / .safetensors of a whole pipeline) is not a source we read."""
    if path.is_file() and path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        raise ModelSourceError(
            f"{path} is a single-file checkpoint; edge-sdk converts diffusers folders, not single files",
            hint=f"make a folder first: python -c \"from diffusers import StableDiffusionPipeline; "
                 f"StableDiffusionPipeline.from_single_file('{path}').save_pretrained('folder')\" "
                 "(StableDiffusionXLPipeline for SDXL), then convert the folder")
    if path.is_dir() and not (path / "model_index.json").is_file() and (path / "config.json").is_file():
        try:
            cls = json.loads((path / "config.json").read_text()).get("_class_name")
        except (ValueError, UnicodeDecodeError, AttributeError):
            cls = None
        if isinstance(cls, str):
            raise ModelSourceError(f"{path} is one component folder ({cls}), not a whole pipeline",
                                   hint="give the pipeline folder with model_index.json (unet/, vae/, ...)"
                                        + ("; ControlNet is not supported" if "ControlNet" in cls else ""))
