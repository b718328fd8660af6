"""Open Inference Protocol tensors: JSON and the binary tensor extension, and what bad bodies get."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_sdk.errors import InputError
from edge_sdk.serve.v2 import decode_infer_request, encode_outputs


def binary_body(arrays: dict[str, np.ndarray], datatype: str = "FP32") -> tuple[bytes, str]:
    head = {"inputs": [{"name": n, "shape": list(a.shape), "datatype": datatype,
                        "parameters": {"binary_data_size": a.nbytes}} for n, a in arrays.items()]}
    h = json.dumps(head).encode()
    return h + b"".join(a.tobytes() for a in arrays.values()), str(len(h))


def test_json_and_binary_decode_to_the_same_arrays():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    t = rng.standard_normal(4).astype(np.float32)
    body, n = binary_body({"x": x, "t": t})
    rid, feeds, wanted = decode_infer_request(body, n)
    np.testing.assert_array_equal(feeds["x"], x)
    np.testing.assert_array_equal(feeds["t"], t)
    js = json.dumps({"id": "7", "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                                            "data": x.ravel().tolist()}],
                     "outputs": [{"name": "y"}]}).encode()
    rid, feeds, wanted = decode_infer_request(js, None)
    assert rid == "7" and wanted == ["y"]
    np.testing.assert_array_equal(feeds["x"], x)  # float32 -> JSON -> float32 is exact
    out = encode_outputs("m", "7", {"y": x}, None)
    assert out["outputs"][0]["datatype"] == "FP32" and out["outputs"][0]["shape"] == [2, 3]
    np.testing.assert_array_equal(np.asarray(out["outputs"][0]["data"], np.float32).reshape(2, 3), x)


@pytest.mark.parametrize("body,header,match", [
    (b"not json", None, "not JSON"),
    (b"[]", None, "'inputs' list"),
    (json.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0]}]}).encode(), None,
     "do not fill"),
    (json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "STRING", "data": [1]}]}).encode(), None,
     "not supported"),
    (json.dumps({"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": []}]}).encode(), None,
     "non-negative"),
    (json.dumps({"inputs": [{"name": "x", "shape": [1 << 20, 1 << 20], "datatype": "FP32"}]}).encode(), None,
     "over the limit"),
    (json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]},
                            {"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}).encode(), None, "twice"),
    (b'{"inputs": [{"name": "x", "shape": [4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}', "999",
     "does not fit"),
    (b'{"inputs": [{"name": "x", "shape": [4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}abcd',
     "101", "runs past"),
    (b'{"inputs": [{"name": "x", "shape": [4], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}abcdefgh',
     "100", "do not hold"),
])
def test_bad_bodies_are_input_errors(body, header, match):
    with pytest.raises(InputError, match=match):
        decode_infer_request(body, header)
