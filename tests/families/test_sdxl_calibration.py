"""int8-static calibration of an SDXL denoiser: its conditioning comes from SDXL's dual text encoder
(two token-id inputs; prompt_embeds for encoder_hidden_states, the pooled text_embeds for the UNet's
text_embeds input), which the single-encoder path called with one input (a TypeError that stopped
every int8-static SDXL convert)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow


def test_sdxl_calibration_feeds_come_from_both_text_encoders(family_folder):
    from edge_sdk.converters.calibrate import DEFAULT_SEEDS, attach_calibration
    from edge_sdk.converters.sources import load_source

    spec = load_source(family_folder("sdxl"))
    attach_calibration(spec)
    den, te = spec.components["denoiser"], spec.components["text_encoder"]
    feeds = den.calibration_inputs(2)
    assert len(feeds) == 2 * len(DEFAULT_SEEDS)  # 2 steps x seeds
    vocab = int(te.config["vocab_size"])
    for i, seed in enumerate(DEFAULT_SEEDS):
        g = torch.Generator().manual_seed(seed)  # the calibration's draw: random ids for each encoder input
        ids = [torch.randint(0, vocab, t.shape, generator=g, dtype=t.dtype) for t in te.example_inputs.values()]
        with torch.no_grad():
            hidden, pooled = te.module(*ids)
        for feed in feeds[2 * i:2 * i + 2]:
            for name, ex in den.example_inputs.items():
                assert feed[name].shape == ex.shape and feed[name].dtype == ex.dtype, name
            # Exactly the encoder's outputs (same ops on the same ids): tolerance 0.
            assert torch.equal(feed["encoder_hidden_states"], hidden)
            assert torch.equal(feed["text_embeds"], pooled)
