"""Untrusted checkpoints: weights load without running code from the file.

A pickle whose ``__reduce__`` would create a marker file is refused and the marker never appears;
safetensors files are checked (header size, duplicate keys, offsets) before safetensors parses
them; and a static scan keeps every ``torch.load`` in the SDK weights-only.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from edge_sdk.converters.checkpoints import check_safetensors, load_state_dict
from edge_sdk.errors import ModelSourceError

REPO = Path(__file__).resolve().parents[2]


class _Payload:
    """Unpickling this runs ``touch <marker>``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_in_torch_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"weight": torch.ones(3), "x": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ModelSourceError, match="holds Python objects or code"):
        load_state_dict(tmp_path / "evil.pt")
    assert not marker.exists()


def test_raw_pickle_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.bin").write_bytes(pickle.dumps({"w": _Payload(marker)}))
    with pytest.raises(ModelSourceError):
        load_state_dict(tmp_path / "evil.bin")
    assert not marker.exists()


def test_converters_load_weights_uses_the_safe_loader(tmp_path):
    from edge_sdk.converters.sources import load_weights

    marker = tmp_path / "pwned"
    torch.save({"weight": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ModelSourceError):
        load_weights(torch.nn.Linear(2, 2), tmp_path / "evil.pt")
    assert not marker.exists()


def test_plain_and_wrapped_state_dicts_load_exactly(tmp_path):
    sd = torch.nn.Linear(4, 3).state_dict()
    torch.save(sd, tmp_path / "a.pt")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "b.pt")
    save_file(sd, tmp_path / "c.safetensors")
    for name in ("a.pt", "b.pt", "c.safetensors"):
        got = load_state_dict(tmp_path / name)
        assert set(got) == set(sd)
        for k in sd:  # bit-exact: loading must not change a value
            assert torch.equal(got[k], sd[k]), (name, k)


def test_torchscript_archive_is_refused(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "m.pt")
    with pytest.raises(ModelSourceError, match="TorchScript"):
        load_state_dict(tmp_path / "m.pt")


def _raw_header(h: bytes, data: bytes) -> bytes:
    return struct.pack("<Q", len(h)) + h + data


def _safetensors_bytes(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


@pytest.mark.parametrize("name, build, fragment", [
    ("duplicate-key", lambda: _raw_header(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                          b'"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4),
     "duplicate key"),
    ("header-past-eof", lambda: struct.pack("<Q", 10**6) + b"{}", "past the end"),
    ("header-too-big", lambda: struct.pack("<Q", 2**40) + b"{}", "over the limit"),
    ("overlap", lambda: _safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
                                           b"\0" * 12), "overlap or hole"),
    ("wrong-span", lambda: _safetensors_bytes({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
                                              b"\0" * 8), "do not match"),
    ("trailing-bytes", lambda: _safetensors_bytes({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
                                                  b"\0" * 9), "trailing bytes"),
    ("short", lambda: b"\x01\x02", "too short"),
    ("not-json", lambda: struct.pack("<Q", 4) + b"nope", "bad header"),
])
def test_malformed_safetensors_are_refused(tmp_path, name, build, fragment):
    p = tmp_path / f"{name}.safetensors"
    p.write_bytes(build())
    with pytest.raises(ModelSourceError, match=fragment):
        load_state_dict(p)


def test_valid_safetensors_header_passes_the_check(tmp_path):
    save_file({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.zeros(3, dtype=torch.float16)},
              tmp_path / "ok.safetensors")
    header = check_safetensors(tmp_path / "ok.safetensors")
    assert header["w"]["shape"] == [2, 3] and header["b"]["dtype"] == "F16"
    np.testing.assert_array_equal(load_state_dict(tmp_path / "ok.safetensors")["w"].numpy(),
                                  np.arange(6, dtype=np.float32).reshape(2, 3))


def test_every_torch_load_in_the_sdk_is_weights_only():
    """Static guard: no torch.load without weights_only=True, no torch.jit.load, no pickle.load."""
    bad = []
    for folder in ("edge_sdk", "converters", "runtimes"):
        for path in (REPO / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                    continue
                owner = node.func.value
                owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
                call = f"{owner_name}.{node.func.attr}"
                if call == "torch.load":
                    ok = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                             for k in node.keywords)
                    if not ok:
                        bad.append(f"{path.relative_to(REPO)}:{node.lineno} torch.load without weights_only=True")
                elif call in ("jit.load", "pickle.load", "pickle.loads", "dill.load", "joblib.load"):
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno} {call}")
    assert bad == []
