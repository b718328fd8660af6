"""A decoder-heavy latent-diffusion bundle (diffusers UNet2DModel + AutoencoderKL decoder), converted once."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _decoder_heavy():
    spec = importlib.util.spec_from_file_location("boards_decoder_heavy", HERE / "decoder_heavy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session", autouse=True)
def memory_cache(tmp_path_factory):
    """Component memory probes are cached per artifact; keep the cache inside this test session."""
    old = os.environ.get("EDGE_SDK_CACHE_DIR")
    os.environ["EDGE_SDK_CACHE_DIR"] = str(tmp_path_factory.mktemp("edge-sdk-cache"))
    yield
    if old is None:
        os.environ.pop("EDGE_SDK_CACHE_DIR", None)
    else:
        os.environ["EDGE_SDK_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def heavy_bundle(tmp_path_factory) -> Path:
    """Class-conditional (CFG), vae_downsample 2, mid-block attention in the VAE: decode dominates memory."""
    import edge_sdk

    out = tmp_path_factory.mktemp("heavy") / "heavy.bundle"
    edge_sdk.convert(_decoder_heavy().build_spec(), out, formats="onnx", precisions="fp32", samples=1)
    return out


@pytest.fixture(scope="session")
def decoder_session(heavy_bundle):
    """The heavy bundle's decoder opened in ONNX Runtime (CPU, 2 threads)."""
    from edge_sdk.bundle import Bundle
    from edge_sdk.runtimes.registry import open_artifact

    rt = open_artifact(Bundle.open(heavy_bundle).artifact("decoder", "onnx", "fp32").path, "onnxruntime",
                       device="cpu", threads=2)
    yield rt
    rt.close()
