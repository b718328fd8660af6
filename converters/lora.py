"""LoRA at convert time: ``--lora FILE[:SCALE]`` fused into the UNet's and text encoders' weights before export.

Files are read with diffusers' own ``lora_state_dict`` (diffusers/PEFT keys, and the kohya and
other layouts diffusers converts, e.g. LCM-LoRA), loaded with ``load_lora_adapter`` (UNet) or
``load_lora_into_text_encoder`` (``lora_te_*``/``text_encoder.*`` keys, CLIP) and fused one adapter
at a time, so each keeps its own scale; the exported weights then carry no adapter. Each file is
recorded (name, sha256, scale) in the config of every component it changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_sdk.errors import ConversionError, ModelSourceError, UsageError

MAX_SCALE = 100.0


@dataclass(frozen=True)
class LoraRef:
    path: Path
    scale: float = 1.0

    @classmethod
    def parse(cls, text: str | LoraRef | tuple) -> LoraRef:
        """``FILE`` or ``FILE:SCALE`` (the last ``:`` followed by a number is the scale)."""
        if isinstance(text, LoraRef):
            return text
        if isinstance(text, tuple):
            return cls(Path(text[0]), float(text[1]))
        head, sep, tail = str(text).rpartition(":")
        scale = 1.0
        path = str(text)
        if sep:
            try:
                scale = float(tail)
                path = head
            except ValueError:
                pass  # a ':' inside the path
        if not math.isfinite(scale) or abs(scale) > MAX_SCALE:
            raise UsageError(f"--lora {text}: scale {scale} must be a finite number within ±{MAX_SCALE:g}")
        return cls(Path(path), scale)


def _sha256(path: Path) -> str:
    from edge_sdk.guard.fsutil import sha256_file

    return sha256_file(path)


# The state-dict prefixes diffusers gives each part of an SD/SDXL pipeline's LoRA.
UNET, TEXT_ENCODERS = "unet", ("text_encoder", "text_encoder_2")


@dataclass
class LoadedLora:
    """A LoRA file read once: its state dict (keys prefixed ``unet.``/``text_encoder[_2].``), alphas
    and manifest record; ``fused`` lists the parts it has been fused into so far."""

    ref: LoraRef
    state: dict[str, Any]
    alphas: Any
    record: dict[str, Any]
    fused: list[str]

    def parts(self) -> set[str]:
        return {k.split(".", 1)[0] for k in self.state}


def read_loras(loras: list[LoraRef]) -> list[LoadedLora]:
    """Read each LoRA with diffusers' own ``lora_state_dict``; refuse parts edge-sdk cannot fuse."""
    from diffusers import StableDiffusionPipeline

    from edge_sdk.converters.checkpoints import check_safetensors

    out = []
    for ref in loras:
        p = ref.path
        if not p.is_file() or p.is_symlink():
            raise ModelSourceError(f"--lora {p}: no such file (a .safetensors or .bin LoRA file)")
        if p.suffix == ".safetensors":
            check_safetensors(p)
        elif p.suffix != ".bin":
            raise ModelSourceError(f"--lora {p}: expected a .safetensors (or weights-only .bin) LoRA file")
        try:
            state, alphas = StableDiffusionPipeline.lora_state_dict(str(p.parent), weight_name=p.name,
                                                                    local_files_only=True)
        except Exception as e:  # noqa: BLE001 - diffusers raises ValueError/KeyError/OSError for odd files
            raise ModelSourceError(f"--lora {p}: not a LoRA diffusers can read: {str(e).splitlines()[0][:300]}",
                                   hint="give a diffusers/PEFT (or kohya) LoRA .safetensors file") from None
        lora = LoadedLora(ref, state, alphas, {"file": p.name, "sha256": _sha256(p), "scale": ref.scale}, [])
        other = sorted(lora.parts() - {UNET, *TEXT_ENCODERS})
        if other:
            raise ConversionError(f"--lora {p}: it adapts {', '.join(other)}, which edge-sdk cannot fuse "
                                  "(UNet and CLIP text encoders only)",
                                  hint="fuse it with diffusers and save_pretrained the folder first")
        if not lora.parts():
            raise ModelSourceError(f"--lora {p}: holds no LoRA weights")
        out.append(lora)
    return out


def fuse_unet(unet: Any, loras: list[LoadedLora]) -> list[dict[str, Any]]:
    """Fuse the UNet part of each LoRA into ``unet`` in place, as diffusers' ``fuse_lora`` does; the
    manifest records of the LoRAs that had one."""
    records = []
    for i, lora in enumerate(loras):
        if UNET not in lora.parts():
            continue
        name = f"edge_sdk_lora_{i}"
        try:
            unet.load_lora_adapter(lora.state, prefix=UNET, network_alphas=lora.alphas, adapter_name=name)
            unet.fuse_lora(lora_scale=lora.ref.scale, adapter_names=[name])
            unet.unload_lora()
        except Exception as e:  # noqa: BLE001 - shape mismatches etc. come from diffusers/PEFT
            raise ModelSourceError(f"--lora {lora.ref.path}: does not fit this UNet: {str(e).splitlines()[0][:300]}",
                                   hint="the LoRA was trained for another base model") from None
        lora.fused.append(UNET)
        records.append(lora.record)
    return records


def fuse_text_encoder(text_encoder: Any, prefix: str, loras: list[LoadedLora]) -> list[dict[str, Any]]:
    """Fuse the ``prefix`` (``text_encoder`` or ``text_encoder_2``) part of each LoRA into the CLIP
    ``text_encoder`` in place, with diffusers' own steps (``load_lora_into_text_encoder``: keys
    converted to PEFT's, ranks and alphas read from the file; ``fuse_text_encoder_lora`` at the
    LoRA's scale; the adapter layers removed, the merged weights kept). The adapter is injected
    with PEFT directly rather than through transformers' ``load_adapter``, which refuses PEFT
    releases older than the one it was built against (transformers 5.25 wants PEFT >= 0.22, which
    is not published) although the PEFT calls it makes are the same."""
    from diffusers.loaders.lora_base import _remove_text_encoder_monkey_patch, fuse_text_encoder_lora
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft
    from diffusers.utils.peft_utils import get_peft_kwargs
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    records = []
    for i, lora in enumerate(loras):
        if prefix not in lora.parts():
            continue
        name = f"edge_sdk_lora_{i}"
        state = {k.removeprefix(f"{prefix}."): v for k, v in lora.state.items() if k.startswith(f"{prefix}.")}
        state = convert_state_dict_to_peft(convert_state_dict_to_diffusers(state))
        if not hasattr(text_encoder, "text_model"):  # flattened CLIPTextModel in newer transformers
            state = {k.removeprefix("text_model."): v for k, v in state.items()}
        rank = {f"{n}.lora_B.weight": state[f"{n}.lora_B.weight"].shape[1] for n, _ in text_encoder.named_modules()
                if f"{n}.lora_B.weight" in state}
        alphas = {k.removeprefix(f"{prefix}."): v for k, v in (lora.alphas or {}).items()
                  if k.split(".")[0] == prefix} or None
        try:
            if not rank:
                raise ValueError("none of its layers names a layer of this text encoder")
            config = LoraConfig(**get_peft_kwargs(rank, network_alpha_dict=alphas, peft_state_dict=state,
                                                  is_unet=False))
            inject_adapter_in_model(config, text_encoder, adapter_name=name)
            result = set_peft_model_state_dict(text_encoder, state, adapter_name=name)
            unexpected = [k for k in getattr(result, "unexpected_keys", []) or [] if ".lora_" in k]
            if unexpected:
                raise ValueError(f"weights for layers it does not have: {', '.join(unexpected[:3])}")
            fuse_text_encoder_lora(text_encoder, lora_scale=lora.ref.scale, adapter_names=[name])
            _remove_text_encoder_monkey_patch(text_encoder)
        except Exception as e:  # noqa: BLE001 - shape mismatches etc. come from PEFT/transformers
            raise ModelSourceError(f"--lora {lora.ref.path}: does not fit this model's {prefix}: "
                                   f"{str(e).splitlines()[0][:300]}",
                                   hint="the LoRA was trained for another base model") from None
        lora.fused.append(prefix)
        records.append(lora.record)
    return records


def check_all_fused(loras: list[LoadedLora], where: str) -> None:
    """Every part of every LoRA went into a network of the folder: none silently dropped."""
    for lora in loras:
        missing = sorted(lora.parts() - set(lora.fused))
        if missing:
            raise ModelSourceError(f"--lora {lora.ref.path}: it adapts {', '.join(missing)}, which {where} does not "
                                   "have", hint="the LoRA was made for another pipeline (e.g. SDXL vs SD 1.x)")


def fuse_loras(unet: Any, loras: list[LoraRef]) -> list[dict[str, Any]]:
    """Fuse UNet-only LoRAs into ``unet`` in place; the manifest records for them (callers with text
    encoders use read_loras + fuse_unet + fuse_text_encoder)."""
    loaded = read_loras(loras)
    records = fuse_unet(unet, loaded)
    check_all_fused(loaded, "a lone UNet")
    return records
