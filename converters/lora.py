"""LoRA at convert time: ``--lora FILE[:SCALE]`` fused into the UNet's weights before export.

Files are read with diffusers' own ``lora_state_dict`` (diffusers/PEFT keys, and the kohya and
other layouts diffusers converts, e.g. LCM-LoRA), loaded with ``load_lora_adapter`` and fused
with ``fuse_lora`` one adapter at a time, so each keeps its own scale; the exported weights then
carry no adapter. Each file is recorded (name, sha256, scale) in the denoiser's config.
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
    from edge_sdk.fsutil import sha256_file

    return sha256_file(path)


def fuse_loras(unet: Any, loras: list[LoraRef]) -> list[dict[str, Any]]:
    """Fuse each LoRA into ``unet`` in place; the manifest records for them."""
    from diffusers import StableDiffusionPipeline

    from edge_sdk.checkpoints import check_safetensors

    records = []
    for i, ref in enumerate(loras):
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
        unet_keys = [k for k in state if k.startswith("unet.")]
        other = sorted({k.split(".", 1)[0] for k in state if not k.startswith("unet.")})
        if other:
            raise ConversionError(f"--lora {p}: it also adapts {', '.join(other)}; only UNet LoRAs are fused so far",
                                  hint="use a UNet-only LoRA (e.g. LCM-LoRA), or fuse it with diffusers and "
                                       "save_pretrained the folder first")
        if not unet_keys:
            raise ModelSourceError(f"--lora {p}: holds no UNet LoRA weights")
        name = f"edge_sdk_lora_{i}"
        try:
            unet.load_lora_adapter(state, prefix="unet", network_alphas=alphas, adapter_name=name)
            unet.fuse_lora(lora_scale=ref.scale, adapter_names=[name])
            unet.unload_lora()
        except Exception as e:  # noqa: BLE001 - shape mismatches etc. come from diffusers/PEFT
            raise ModelSourceError(f"--lora {p}: does not fit this UNet: {str(e).splitlines()[0][:300]}",
                                   hint="the LoRA was trained for another base model") from None
        records.append({"file": p.name, "sha256": _sha256(p), "scale": ref.scale})
    return records
