"""A small latent-diffusion model whose decoder dominates memory: diffusers UNet2DModel + AutoencoderKL decoder."""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 10


class VaeDecoder(nn.Module):
    """latent -> image in [-1, 1], as diffusers' AutoencoderKL.decode does it."""

    def __init__(self, vae) -> None:
        super().__init__()
        self.post_quant_conv = vae.post_quant_conv
        self.decoder = vae.decoder

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(latent))


class Denoiser(nn.Module):
    def __init__(self, unet) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, class_labels=class_labels).sample


def build_spec(decoder_channels=(32, 64), latent=16):
    from diffusers import AutoencoderKL, UNet2DModel

    from edge_sdk.converters.sources import component_from
    from edge_sdk.converters.spec import ModelSpec

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=latent, in_channels=4, out_channels=4, layers_per_block=1,
                       block_out_channels=(16, 32), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8,
                       num_class_embeds=NUM_CLASSES + 1).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                        block_out_channels=tuple(decoder_channels), norm_num_groups=16,
                        down_block_types=("DownEncoderBlock2D",) * len(decoder_channels),
                        up_block_types=("UpDecoderBlock2D",) * len(decoder_channels)).eval()
    down = 2 ** (len(decoder_channels) - 1)
    den = component_from(Denoiser(unet), {"sample": torch.randn(1, 4, latent, latent),
                                          "timestep": torch.tensor([500.0]),
                                          "class_labels": torch.tensor([1])}, role="denoiser")
    dec = component_from(VaeDecoder(vae), {"latent": torch.randn(1, 4, latent, latent)}, role="decoder")
    model = {"kind": "latent_diffusion", "conditioning": "class",
             "num_classes": NUM_CLASSES, "null_class": NUM_CLASSES, "sample_size": [latent, latent], "in_channels": 4,
             "latent_scale_factor": 1.0, "vae_downsample": down, "spatial_multiple": 2, "image_channels": 3}
    sampler = {"default_sampler": "ddim", "default_steps": 2, "default_guidance": 3.0,
               "config": {"num_train_timesteps": 1000, "beta_schedule": "linear", "prediction_type": "epsilon"}}
    return ModelSpec(name="decoder-heavy", components={"denoiser": den, "decoder": dec}, model=model, sampler=sampler)
