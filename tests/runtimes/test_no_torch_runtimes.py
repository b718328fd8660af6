"""The device path on every runtime, in a process where torch cannot be imported at all.

A meta-path finder refuses ``torch`` before anything else is imported, as on a board where torch
is not installed. Each runtime must still generate, doctor must still report, and the torch
reference must say it is unavailable (with what to install) rather than fail on import.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # converts a bundle into every format, then a fresh interpreter per runtime: the full run


def test_every_runtime_generates_without_torch(tri_bundle):
    script = textwrap.dedent(f"""
        import json, sys
        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, BlockTorch())
        import numpy as np
        import edge_sdk
        from edge_sdk.errors import RuntimeUnavailableError
        from edge_sdk.measure.doctor import report
        from edge_sdk.runtimes.registry import open_artifact

        out = {{}}
        images = {{}}
        for runtime, fmt in (("onnxruntime", "onnx"), ("openvino", "openvino"), ("litert", "tflite")):
            with edge_sdk.load({str(tri_bundle)!r}, runtime=runtime, format=fmt, threads=1) as gen:
                images[runtime] = gen.generate(steps=4, seed=5).images
        base = images["onnxruntime"]
        out["max_diff"] = {{k: int(np.abs(v.astype(int) - base.astype(int)).max()) for k, v in images.items()}}
        out["std"] = float(base.std())
        r = report()
        out["doctor"] = {{k: v["available"] for k, v in r["runtimes"].items()}}
        try:
            open_artifact("x.pt2", "torch")
            out["torch_open"] = "opened"
        except RuntimeUnavailableError as e:
            out["torch_open"] = e.hint
        out["torch_loaded"] = "torch" in sys.modules
        out["converters_loaded"] = sorted(m for m in sys.modules if m.startswith("edge_sdk.converters"))
        print(json.dumps(out))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["torch_loaded"] is False
    assert res["converters_loaded"] == []
    assert res["std"] > 5
    # Same fp32 model, same seed: uint8 images within one level (see test_cross_runtime.py).
    assert all(d <= 1 for d in res["max_diff"].values()), res["max_diff"]
    assert res["doctor"]["onnxruntime"] and res["doctor"]["openvino"] and res["doctor"]["litert"]
    assert res["doctor"]["torch"] is False
    assert "pip install" in res["torch_open"]
