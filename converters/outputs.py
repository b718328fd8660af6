"""Output names and dynamic output dims a component gets when its source does not name them.

Shared by the sources (``sources.py``) and the .pt2 loader (``pt2.py``), which imports the sources.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

DEFAULT_OUTPUT = {"denoiser": "noise_pred", "decoder": "image", "encoder": "latent", "generator": "image",
                  "text_encoder": "last_hidden_state"}


def default_output_dims(module: torch.nn.Module, inputs: Mapping[str, torch.Tensor],
                        output_names: list[str]) -> dict[str, dict[int, str]]:
    with torch.no_grad():
        outs = module(*inputs.values())
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    spatial = next((t.shape[2:] for t in inputs.values() if t.ndim == 4), None)
    dims = {}
    for name, o in zip(output_names, outs, strict=False):
        d = {0: "batch"} if o.ndim >= 1 else {}
        if o.ndim == 4 and spatial is not None:
            same = tuple(o.shape[2:]) == tuple(spatial)
            d[2], d[3] = ("height", "width") if same else ("out_height", "out_width")
        dims[name] = d
    return dims
