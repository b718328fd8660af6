"""Loading model weights without running code from the file (host side; torch imported lazily).

A PyTorch pickle can execute anything while it is unpickled (its ``__reduce__``), so weights come
only through:

- safetensors, after our own header pre-parse (size cap, duplicate keys, offsets contiguous and
  inside the file: safetensors itself has accepted duplicate keys), or
- ``torch.load(weights_only=True)``, whose restricted unpickler refuses any global that is not a
  tensor/container type; a pickle that tries to run code becomes ``ModelSourceError``.

TorchScript archives (``torch.jit.load``) carry executable code too and are refused.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

from edge_sdk.errors import ModelSourceError

# A safetensors header is JSON metadata; ours are a few KB. Anything larger is refused unread.
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_TENSORS = 100_000
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def check_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """Validate a .safetensors file's header against its size; return the header (tensor -> info)."""
    path = Path(path)
    where = f"safetensors file {path}"
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelSourceError(f"{where}: only {size} bytes, too short for a header",
                                   hint="the file is truncated or not safetensors")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise ModelSourceError(f"{where}: header length {n} is over the limit or past the end of the "
                                   f"{size}-byte file", hint="the file is corrupt or not safetensors")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ModelSourceError(f"{where}: bad header ({e})", hint="the file is corrupt") from None
    if not isinstance(header, dict):
        raise ModelSourceError(f"{where}: the header is not a JSON object")
    header.pop("__metadata__", None)
    if len(header) > MAX_TENSORS:
        raise ModelSourceError(f"{where}: {len(header)} tensors, over the {MAX_TENSORS} limit")
    spans = []
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            count = 1
            for d in shape:
                if not isinstance(d, int) or d < 0:
                    raise ValueError(f"bad dim {d!r}")
                count *= d
            width = _DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError) as e:
            raise ModelSourceError(f"{where}: tensor {name!r} has a malformed entry ({e})") from None
        if not (isinstance(begin, int) and isinstance(end, int)) or begin < 0 or end - begin != count * width:
            raise ModelSourceError(f"{where}: tensor {name!r} offsets {begin}..{end} do not match "
                                   f"{dtype}{shape}", hint="the file is corrupt")
        spans.append((begin, end, name))
    pos = 0
    for begin, end, name in sorted(spans):
        if begin != pos:
            raise ModelSourceError(f"{where}: tensor {name!r} starts at {begin}, expected {pos} (overlap or hole)",
                                   hint="the file is corrupt or crafted")
        pos = end
    if 8 + n + pos != size:
        raise ModelSourceError(f"{where}: tensors end at byte {8 + n + pos} but the file has {size}",
                               hint="the file is truncated or has trailing bytes")
    return header


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/code/") or "/code/" in n for n in z.namelist()[:10000])
    except (zipfile.BadZipFile, OSError):
        return False


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Tensors from a checkpoint (``.safetensors``, or a torch ``.pt/.pth/.bin`` loaded weights-only).

    A checkpoint wrapping its weights (``{"state_dict": ...}``, ``{"model": ...}``) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelSourceError(f"checkpoint {path} does not exist or is not a file")
    import torch

    if path.suffix == ".safetensors":
        check_safetensors(path)
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # SafetensorError and friends: one typed error
            raise ModelSourceError(f"safetensors file {path}: {str(e).splitlines()[0]}") from None
    if _is_torchscript(path):
        raise ModelSourceError(f"checkpoint {path} is a TorchScript archive, which holds executable code",
                               hint="save the weights with safetensors or torch.save(model.state_dict())")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e)
        if "Weights only load failed" in text or "Unsupported global" in text or "UnpicklingError" in type(e).__name__:
            raise ModelSourceError(
                f"checkpoint {path} was refused: it holds Python objects or code, not only tensors",
                hint="it may be malicious; if you made it, re-save with safetensors or a plain state_dict") from None
        first = text.strip().splitlines()[0][:300] if text.strip() else type(e).__name__
        raise ModelSourceError(f"checkpoint {path} cannot be read: {first}",
                               hint="the file is truncated or not a PyTorch checkpoint") from None
    for key in ("state_dict", "model", "model_state_dict", "ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict) and obj[key] and \
                all(isinstance(v, torch.Tensor) for v in obj[key].values()):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelSourceError(f"checkpoint {path} is not a state_dict (name -> tensor)",
                               hint="save it with torch.save(model.state_dict(), path)")
    return obj
