"""edge-sdk: generative models (diffusion, VAE, GAN) converted on a workstation, run on edge boards.

Device-side API (no torch needed)::

    import edge_sdk
    gen = edge_sdk.load("my-bundle")                  # verifies every file's sha256
    result = gen.generate(steps=8, seed=0)
    result.save("out.png")
    gen = edge_sdk.load("my-bundle", board="rpi5-8gb")  # the board's plan, under its memory cap

Host-side API (needs ``pip install edge-sdk[convert]``)::

    edge_sdk.convert("pkg.module:factory", "my-bundle", formats=["onnx"])
"""

from __future__ import annotations

__version__ = "0.1.0"

from edge_sdk.errors import EdgeSDKError  # noqa: E402


def load(bundle, **kwargs):
    """Open a bundle and return a Generator ready to ``generate``. See ``edge_sdk.api.load``."""
    from edge_sdk.api import load as _load

    return _load(bundle, **kwargs)


def convert(source, output, **kwargs):
    """Convert a model source into a bundle (host side). See ``edge_sdk.converters.convert``."""
    from edge_sdk.converters.convert import convert as _convert

    return _convert(source, output, **kwargs)


def open_bundle(path, verify: bool = True):
    """Open and verify a bundle folder."""
    from edge_sdk.bundle import Bundle

    return Bundle.open(path, verify=verify)


__all__ = ["__version__", "load", "convert", "open_bundle", "EdgeSDKError"]
