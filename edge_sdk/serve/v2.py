"""Open Inference Protocol (KServe v2) tensors: JSON and the binary tensor extension <-> numpy.

Shared by the server (``edge_sdk.serve.app``) and ``edge-sdk export triton`` (datatype names).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from edge_sdk.errors import InputError

# Protocol datatype <-> numpy dtype (the protocol's table; BYTES is not used by any bundle tensor).
V2_DTYPES = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
             "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "FP16": "float16",
             "FP32": "float32", "FP64": "float64"}
NUMPY_TO_V2 = {v: k for k, v in V2_DTYPES.items()}
MAX_ELEMENTS = 1 << 26  # 64 Mi elements per tensor: more is a mistake or an attack


def v2_datatype(numpy_dtype: str) -> str:
    try:
        return NUMPY_TO_V2[str(np.dtype(numpy_dtype))]
    except (KeyError, TypeError):
        raise InputError(f"dtype {numpy_dtype} has no Open Inference Protocol datatype") from None


def _shape(v: Any, where: str) -> list[int]:
    if not isinstance(v, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in v):
        raise InputError(f"{where}: shape must be a list of non-negative integers, got {v!r}")
    n = int(np.prod(v)) if v else 1
    if n > MAX_ELEMENTS:
        raise InputError(f"{where}: shape {v} has {n} elements, over the limit of {MAX_ELEMENTS}")
    return v


def decode_infer_request(body: bytes,
                         header_len: str | None) -> tuple[str | None, dict[str, np.ndarray], list[str] | None]:
    """(request id, {input name: array}, requested output names or None for all) from an infer body.

    ``header_len``: the ``Inference-Header-Content-Length`` header of the binary extension (the
    JSON header is that long; raw tensor bytes follow, in input order).
    """
    if header_len is not None:
        if not header_len.isdigit() or int(header_len) > len(body):
            raise InputError(f"Inference-Header-Content-Length {header_len!r} does not fit a {len(body)}-byte body")
        head, binary = body[:int(header_len)], memoryview(body)[int(header_len):]
    else:
        head, binary = body, memoryview(b"")
    try:
        req = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"infer request is not JSON: {e}") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise InputError("infer request must be a JSON object with an 'inputs' list")
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    for i, t in enumerate(req["inputs"]):
        where = f"inputs[{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise InputError(f"{where}: each input needs a 'name'")
        where = f"input {t['name']!r}"
        if t["name"] in feeds:
            raise InputError(f"{where} is given twice")
        shape = _shape(t.get("shape"), where)
        dt = t.get("datatype")
        if dt not in V2_DTYPES:
            raise InputError(f"{where}: datatype {dt!r} is not supported", hint=f"use one of {', '.join(V2_DTYPES)}")
        dtype = np.dtype(V2_DTYPES[dt])
        params = t.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InputError(f"{where}: binary_data_size {size!r} runs past the body's binary part")
            raw = binary[offset:offset + size]
            offset += size
            if size != int(np.prod(shape)) * dtype.itemsize:
                raise InputError(f"{where}: {size} bytes do not hold a {dt} tensor of shape {shape}")
            arr = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        else:
            try:
                arr = np.asarray(t.get("data"), dtype=dtype)
            except (TypeError, ValueError) as e:
                raise InputError(f"{where}: data is not a list of {dt} values ({e})") from None
            if arr.size != int(np.prod(shape)):
                raise InputError(f"{where}: {arr.size} values do not fill shape {shape}")
            arr = arr.reshape(shape)
        feeds[t["name"]] = arr
    wanted = None
    if req.get("outputs") is not None:
        outs = req["outputs"]
        if not isinstance(outs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outs):
            raise InputError("'outputs' must be a list of {\"name\": ...} objects")
        wanted = [o["name"] for o in outs]
    rid = req.get("id")
    return (str(rid) if rid is not None else None), feeds, wanted


def encode_outputs(model: str, request_id: str | None, outputs: dict[str, np.ndarray],
                   wanted: list[str] | None) -> dict[str, Any]:
    """The JSON infer response (tensors as flat ``data`` lists; float32 survives JSON exactly)."""
    names = wanted if wanted is not None else list(outputs)
    missing = [n for n in names if n not in outputs]
    if missing:
        raise InputError(f"model {model} has no output(s) {missing}", hint=f"outputs: {', '.join(outputs)}")
    out = []
    for n in names:
        a = np.asarray(outputs[n])
        out.append({"name": n, "shape": list(a.shape), "datatype": v2_datatype(str(a.dtype)),
                    "data": a.ravel().tolist()})
    resp: dict[str, Any] = {"model_name": model, "outputs": out}
    if request_id is not None:
        resp["id"] = request_id
    return resp


def tensor_metadata(specs) -> list[dict[str, Any]]:
    """TensorSpecs -> the protocol's metadata (dynamic dims are -1)."""
    return [{"name": t.name, "datatype": v2_datatype(t.dtype),
             "shape": [d if isinstance(d, int) and d > 0 else -1 for d in t.shape]} for t in specs]


def model_metadata(bundle, component: str, plan) -> dict[str, Any]:
    ins, outs = bundle.signature(component)
    cp = plan.components.get(component) if plan is not None else None
    platform = f"edge-sdk/{cp.runtime}" if cp is not None else "edge-sdk"
    return {"name": component, "versions": ["1"], "platform": platform,
            "inputs": tensor_metadata(ins), "outputs": tensor_metadata(outs)}
