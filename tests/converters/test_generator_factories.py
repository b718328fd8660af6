"""GANs and other one-shot generators from a plain ``module:factory``: the issue's DCGAN with a
16-channel z, returned as ``(model, (z,))``, converts as a generator (image channels from its
output) and generates through the device pipeline; ``--kind`` overrides the guess."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

from edge_sdk.converters.sources import load_source
from edge_sdk.errors import ModelSourceError

FACTORY = textwrap.dedent('''
    import torch
    from torch import nn

    class DCGAN(nn.Module):
        def __init__(self, nz=16, ngf=8):
            super().__init__()
            self.net = nn.Sequential(
                nn.ConvTranspose2d(nz, ngf * 2, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 2, 3, 4, 2, 1, bias=False), nn.Tanh())

        def forward(self, z):
            return self.net(z)

    def make():
        torch.manual_seed(0)
        return DCGAN().eval(), (torch.randn(1, 16, 1, 1),)

    def make_gray_feature_map():
        torch.manual_seed(0)
        return nn.Conv2d(5, 5, 1).eval(), (torch.randn(1, 5, 4, 4),)

    def make_eight_channels():
        torch.manual_seed(0)
        return DCGAN().net[:3].eval(), (torch.randn(1, 16, 1, 1),)
''')


@pytest.fixture
def factory_file(tmp_path):
    p = tmp_path / "gan_factory.py"
    p.write_text(FACTORY)
    return p


def test_dcgan_factory_is_a_generator_with_channels_from_its_output(factory_file):
    spec = load_source(f"{factory_file}:make")
    assert list(spec.components) == ["generator"]
    assert spec.model["kind"] == "gan"
    assert spec.model["generator_latent"] == [16, 1, 1]
    assert spec.model["image_channels"] == 3  # from the [1, 3, 8, 8] output, never z's 16


def test_kind_overrides_the_guess_and_bad_generators_are_refused(factory_file):
    # Same-shape one-input modules stay denoisers (as before) unless --kind says otherwise.
    assert list(load_source(f"{factory_file}:make_gray_feature_map").components) == ["denoiser"]
    with pytest.raises(ModelSourceError, match="generator: its output has 5 channels"):
        load_source(f"{factory_file}:make_gray_feature_map", kind="generator")
    with pytest.raises(ModelSourceError, match="generator: its output has 16 channels"):
        load_source(f"{factory_file}:make_eight_channels")


@pytest.mark.slow
def test_dcgan_factory_converts_and_runs_through_the_cli(factory_file, tmp_path, cli):
    out = tmp_path / "gan.bundle"
    r = cli("convert", f"{factory_file}:make", "-o", str(out), "--json", env={"EDGE_SDK_NO_PROGRESS": "1"})
    assert r.returncode == 0, r.stderr
    # Per-component progress with time and memory (stderr; stdout stays JSON).
    import re

    assert re.search(r"\d+\.\ds  source load", r.stderr), r.stderr
    m = re.search(r"\d+\.\ds  generator\s+onnx\s+fp32\s+memory rss (\d+\.\d+) GiB, peak (\d+\.\d+) GiB", r.stderr)
    assert m and 0 < float(m.group(1)) <= float(m.group(2)), r.stderr
    png = tmp_path / "gan.png"
    r = cli("run", str(out), "--seed", "3", "--out", str(png), "--json")
    assert r.returncode == 0, r.stderr
    from PIL import Image

    img = np.asarray(Image.open(png))
    assert img.shape == (8, 8, 3) and img.std() > 0
    # The device pipeline's image equals the PyTorch generator on the same z (fp32 ONNX: 1e-4 rel,
    # the convert's own fp32 bar), checked through the Python API with the pipeline's own noise.
    import importlib.util

    from edge_sdk import api
    from edge_sdk.pipelines.seeds import RowNoise

    spec = importlib.util.spec_from_file_location("gan_factory_ref", factory_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model, _ = mod.make()
    with api.load(out) as g:
        res = g.generate(seed=3)
    z = RowNoise(3, 1).draw((16, 1, 1))
    with torch.no_grad():
        ref = model(torch.from_numpy(np.asarray(z, dtype=np.float32))).numpy()
    from edge_sdk.pipelines.result import to_uint8

    got = np.asarray(res.images).astype(np.int16)
    assert np.abs(got - to_uint8(ref).astype(np.int16)).max() <= 1  # uint8 rounding of values equal to 1e-4
    assert json.loads(r.stdout)
