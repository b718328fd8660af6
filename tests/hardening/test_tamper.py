"""Tampering: 1,000 random single-byte changes and truncations of a bundle's files, each refused
with an IntegrityError naming the file, before any runtime parses it.

The bundle is the tiny converted denoiser with its weights moved to ONNX external data, so the
mutations hit two listed files (the graph and the weights). A spy on onnxruntime's session class
counts how many times a runtime was asked to parse something: it must stay at zero.
(Changes to manifest.json itself are what bundle signatures are for: see docs/hardening.md.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

import edge_sdk
from edge_sdk.errors import IntegrityError

MUTATIONS = 1000
SEED = 20261123


@pytest.fixture
def two_file_bundle(tiny_bundle_copy: Path, helpers) -> Path:
    import onnx

    model = tiny_bundle_copy / "denoiser/onnx/fp32/model.onnx"
    onnx.save_model(onnx.load(model), model, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    helpers.reseal(tiny_bundle_copy, add={"denoiser": ["denoiser/onnx/fp32/weights.bin"]})
    edge_sdk.load(tiny_bundle_copy).close()  # the untouched bundle opens
    return tiny_bundle_copy


def test_every_mutation_is_detected_before_any_runtime(two_file_bundle: Path, monkeypatch):
    root = two_file_bundle
    files = [f["path"] for c in json.loads((root / "manifest.json").read_text())["components"].values()
             for a in c["artifacts"] for f in a["files"]]
    assert len(files) == 2
    originals = {rel: (root / rel).read_bytes() for rel in files}

    parsed = []
    real_session = onnxruntime.InferenceSession

    def spy(*args, **kwargs):
        parsed.append(args[0] if args else kwargs)
        return real_session(*args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", spy)

    rng = np.random.default_rng(SEED)
    kinds = {"flip": 0, "set": 0, "truncate": 0, "extend": 0}
    detected = 0
    for _ in range(MUTATIONS):
        rel = files[int(rng.integers(len(files)))]
        data = originals[rel]
        kind = ("flip", "set", "truncate", "extend")[int(rng.integers(4))]
        if kind == "flip":  # one bit
            i = int(rng.integers(len(data)))
            bad = data[:i] + bytes([data[i] ^ (1 << int(rng.integers(8)))]) + data[i + 1:]
        elif kind == "set":  # one byte to any other value
            i = int(rng.integers(len(data)))
            bad = data[:i] + bytes([(data[i] + int(rng.integers(1, 256))) % 256]) + data[i + 1:]
        elif kind == "truncate":
            bad = data[:int(rng.integers(len(data)))]
        else:
            bad = data + bytes([int(rng.integers(256))])
        assert bad != data
        kinds[kind] += 1
        (root / rel).write_bytes(bad)
        try:
            with pytest.raises(IntegrityError) as ei:
                edge_sdk.load(root).generate(steps=1)
            assert rel in str(ei.value), ei.value
            detected += 1
        finally:
            (root / rel).write_bytes(data)
    assert detected == MUTATIONS
    assert parsed == [], f"a runtime parsed {len(parsed)} tampered file(s)"
    assert min(kinds.values()) > 150  # every kind of mutation was exercised (about 250 each)
