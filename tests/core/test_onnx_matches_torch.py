"""The converted ONNX file computes what the PyTorch module computes."""

from __future__ import annotations

import numpy as np
import torch

from edge_sdk.bundle import Bundle
from edge_sdk.converters.sources import load_entry_point
from edge_sdk.runtimes.registry import open_artifact


def test_onnx_matches_pytorch_on_new_inputs_and_shapes(tiny_bundle, tiny_factory):
    model, _ = load_entry_point(tiny_factory)()
    art = Bundle.open(tiny_bundle).artifact("denoiser", "onnx", "fp32")
    g = torch.Generator().manual_seed(123)
    with open_artifact(art.path, "onnxruntime") as rt:
        # Shapes other than the example's: the batch and spatial dims are dynamic.
        for shape, t in (((1, 3, 32, 32), 999.0), ((2, 3, 48, 64), 10.0)):
            x = torch.randn(shape, generator=g)
            ts = torch.full((shape[0],), t)
            with torch.no_grad():
                ref = model(x, ts).numpy()
            got = rt.run({"sample": x.numpy(), "timestep": ts.numpy()})["noise_pred"]
            rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
            # fp32 kernels differ from PyTorch only in summation order: ~1e-6 observed, 1e-4 is the bar.
            assert rel < 1e-4, rel
