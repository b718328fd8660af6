"""The demo model shipped with edge-sdk: a class-conditional latent diffusion model of coloured
digits (tiny VAE + latent denoiser) and the classifier that measures its generation quality.

Trained by ``examples/demo_model/train.py``; see ``MODEL_CARD.md`` next to this file. Weights are
safetensors files in ``weights/`` (never pickle). Host side: loading the modules needs torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_sdk.errors import ModelSourceError

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "NULL_CLASS",
    "IMAGE_SIZE",
    "LATENT_CHANNELS",
    "VAE_DOWNSAMPLE_FACTOR",
    "LATENT_SIZE",
    "SCALING_FACTOR",
    "SCHEDULER_CONFIG",
    "DEFAULT_NUM_STEPS",
    "DEFAULT_GUIDANCE_SCALE",
    "MODULE_CONFIGS",
    "WEIGHT_FILES",
    "WEIGHTS_DIR",
    "MODEL_CARD",
    "build_demo_modules",
    "load_demo_modules",
]

CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))
NUM_CLASSES = len(CLASS_NAMES)
# The denoiser's extra class index meaning "no class": classifier-free guidance's unconditional.
NULL_CLASS = NUM_CLASSES
IMAGE_SIZE = 32
LATENT_CHANNELS = 4
VAE_DOWNSAMPLE_FACTOR = 4
LATENT_SIZE = IMAGE_SIZE // VAE_DOWNSAMPLE_FACTOR
# 1 / std of the encoder's latents over the training images, rounded to 4 decimals before the
# denoiser was trained on latents * SCALING_FACTOR. Also stored in the metadata of
# weights/vae_encoder.safetensors; tests check the two agree.
SCALING_FACTOR = 0.9052

# diffusers-style scheduler config the denoiser was trained with (DDPMScheduler keys).
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "timestep_spacing": "trailing",
    "steps_offset": 0,
}
# Sampler settings the quality figure in MODEL_CARD.md was measured with (DPM-Solver++ 2M).
DEFAULT_NUM_STEPS = 8
DEFAULT_GUIDANCE_SCALE = 4.0

# Constructor keyword arguments of each module in converters/demo/model.py.
MODULE_CONFIGS: dict[str, dict[str, Any]] = {
    "vae_encoder": {"latent_channels": LATENT_CHANNELS, "channels": (16, 48)},
    "vae_decoder": {"latent_channels": LATENT_CHANNELS, "channels": (16, 48)},
    "denoiser": {
        "num_classes": NUM_CLASSES,
        "latent_channels": LATENT_CHANNELS,
        "channels": (48, 96),
        "emb_dim": 128,
    },
    "classifier": {"num_classes": NUM_CLASSES, "channels": (32, 64, 64)},
}
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHT_FILES: dict[str, Path] = {name: WEIGHTS_DIR / f"{name}.safetensors" for name in MODULE_CONFIGS}
MODEL_CARD = Path(__file__).resolve().parent / "MODEL_CARD.md"


def build_demo_modules() -> dict[str, Any]:
    """Freshly initialised (untrained) modules, keyed like ``MODULE_CONFIGS``."""
    from edge_sdk.converters.demo import model

    classes = {
        "vae_encoder": model.VAEEncoder,
        "vae_decoder": model.VAEDecoder,
        "denoiser": model.ClassConditionalDenoiser,
        "classifier": model.DigitClassifier,
    }
    return {name: classes[name](**MODULE_CONFIGS[name]) for name in MODULE_CONFIGS}


def load_demo_modules() -> dict[str, Any]:
    """The trained demo modules in eval mode: ``vae_encoder``, ``vae_decoder``, ``denoiser``,
    ``classifier`` (torch ``nn.Module`` each), loaded from ``weights/*.safetensors``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    modules = build_demo_modules()
    for name, module in modules.items():
        path = WEIGHT_FILES[name]
        if not path.is_file():
            raise ModelSourceError(
                f"demo model weights {path} are missing; reinstall edge-sdk or regenerate them "
                "with `python examples/demo_model/train.py`"
            )
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ModelSourceError(
                f"demo model weights {path} cannot be read ({exc}); reinstall edge-sdk or "
                "regenerate them with `python examples/demo_model/train.py`"
            ) from exc
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelSourceError(
                f"demo model weights {path} do not fit the {name} architecture ({exc}); the file "
                "and converters/demo/model.py are out of step: regenerate the weights with "
                "`python examples/demo_model/train.py`"
            ) from exc
        module.eval()
    return modules
