"""`edge-sdk export triton`: a Triton model repository from a bundle, so the same files serve in the cloud.

One model per component: ``OUT/<component>/config.pbtxt`` and ``OUT/<component>/1/<files>``, for
Triton's ONNX Runtime backend (ONNX artifacts) or OpenVINO backend (IR artifacts). Dynamic
dimensions become -1 with ``max_batch_size: 0`` (the bundle's shapes already include the batch
axis, so Triton's own batcher is off and the shapes are exactly the bundle's). Every copied file is
checked against the manifest's sha256 after copying; ``edge-sdk-export.json`` records them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from edge_sdk.bundle import Bundle
from edge_sdk.errors import IntegrityError, UsageError
from edge_sdk.guard.fsutil import sha256_file

BACKENDS = {"onnxruntime": "onnx", "openvino": "openvino"}  # Triton backend -> bundle format
DEFAULT_BACKEND = next(iter(BACKENDS))
DEFAULT_FILENAME = {"onnx": "model.onnx", "openvino": "model.xml"}
TRITON_TYPES = {"bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
                "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
                "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64"}
MARKER = "edge-sdk-export.json"


def _dims(shape) -> list[int]:
    return [d if isinstance(d, int) and d > 0 else -1 for d in shape]


def _tensor(t) -> str:
    try:
        dt = TRITON_TYPES[str(t.dtype)]
    except KeyError:
        raise UsageError(f"tensor {t.name!r} has dtype {t.dtype}, which Triton has no type for") from None
    return (f'  {{\n    name: "{t.name}"\n    data_type: {dt}\n    dims: [ {", ".join(map(str, _dims(t.shape)))} ]\n'
            "  }")


def config_pbtxt(name: str, backend: str, inputs, outputs, filename: str, instances: int = 1) -> str:
    """The model's config.pbtxt (protobuf text format of Triton's ModelConfig)."""
    kind = "KIND_CPU" if backend == "openvino" else "KIND_AUTO"  # Triton's OpenVINO backend is CPU-only
    return (f'name: "{name}"\nbackend: "{backend}"\nmax_batch_size: 0\n'
            f'default_model_filename: "{filename}"\n'
            "input [\n" + ",\n".join(_tensor(t) for t in inputs) + "\n]\n"
            "output [\n" + ",\n".join(_tensor(t) for t in outputs) + "\n]\n"
            f"instance_group [\n  {{\n    kind: {kind}\n    count: {instances}\n  }}\n]\n")


def export_triton(bundle: str | os.PathLike | Bundle, out: str | os.PathLike, *, backend: str = DEFAULT_BACKEND,
                  precision: str = "fp32", components: list[str] | None = None) -> dict[str, Any]:
    """Write the repository to ``out`` (which must not exist, or be an empty folder); returns its summary."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown Triton backend {backend!r}", hint=f"backends: {', '.join(BACKENDS)}")
    b = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle, verify=True)
    fmt = BACKENDS[backend]
    names = components or list(b.components)
    unknown = [n for n in names if n not in b.components]
    if unknown:
        raise UsageError(f"bundle {b.name} has no component(s) {unknown}",
                         hint=f"components: {', '.join(b.components)}")
    out = Path(out)
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise UsageError(f"{out} already exists and is not an empty folder",
                         hint="choose a new OUT: edge-sdk never writes into or over a folder it did not create")
    arts = {n: b.artifact(n, fmt, precision) for n in names}  # fails early, before writing anything
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        raise UsageError(f"{tmp} is in the way", hint="remove it (a previous export was interrupted)")
    tmp.mkdir(parents=True)
    summary: dict[str, Any] = {"bundle": b.name, "backend": backend, "precision": precision, "models": {}}
    try:
        records = {f["path"]: f for c in b.manifest["components"].values() for a in c["artifacts"] for f in a["files"]}
        for name, art in arts.items():
            rec = next(a for a in b.manifest["components"][name]["artifacts"]
                       if a["format"] == fmt and a["precision"] == precision and a.get("variant", "") == "")
            version_dir = tmp / name / "1"
            version_dir.mkdir(parents=True)
            entry_dir = art.path.parent
            files = []
            for f in rec["files"]:
                src = b.root / f["path"]
                rel = src.relative_to(entry_dir)  # external data keeps its place next to the model
                dst = version_dir / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst, follow_symlinks=False)
                digest = sha256_file(dst)
                if digest != records[f["path"]]["sha256"]:
                    raise IntegrityError(f"copy of {f['path']} differs from the manifest's sha256",
                                         hint="the bundle changed during the export, or the disk is failing")
                files.append({"path": str(Path(name) / "1" / rel), "sha256": digest, "size": dst.stat().st_size})
            ins, outs = b.signature(name)
            (tmp / name / "config.pbtxt").write_text(config_pbtxt(name, backend, ins, outs, art.path.name))
            summary["models"][name] = {"files": files, "entry": art.path.name}
        (tmp / MARKER).write_text(json.dumps(summary, indent=2))
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # ours: created above
        raise
    return summary


def parse_config(path: str | os.PathLike):
    """A config.pbtxt parsed with Triton's own ModelConfig protobuf (tritonclient's model_config_pb2)."""
    try:  # tritonclient's grpc part (grpcio) holds the protobuf types: the `serve` extra installs it
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except (ImportError, RuntimeError) as e:  # tritonclient raises RuntimeError when grpcio is missing
        from edge_sdk.errors import RuntimeUnavailableError

        raise RuntimeUnavailableError(f"Triton's model config types are not importable: {e}",
                                      hint="pip install 'tritonclient[grpc]' (or edge-sdk[serve])") from None

    return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())
