"""A tiny pixel-space denoiser with seeded random weights: the smallest model `edge-sdk convert`
takes, used by the quick tests. (The real, trained model is the demo: `edge-sdk demo`.)

    edge-sdk convert examples/tiny_unet.py:factory -o tiny.bundle
"""

import math

import torch
from torch import nn


class TinyDenoiser(nn.Module):
    def __init__(self, channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.temb = nn.Linear(32, width)
        self.block = nn.Sequential(nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1),
                                   nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1))
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(-math.log(10000.0) * torch.arange(16, dtype=torch.float32) / 16)
        angles = timestep.float()[:, None] * freqs[None]
        emb = self.temb(torch.cat([angles.sin(), angles.cos()], dim=1))[:, :, None, None]
        h = self.inp(sample) + emb
        return self.out(h + self.block(h))


def factory():
    torch.manual_seed(0)
    model = TinyDenoiser().eval()
    example = {"sample": torch.randn(1, 3, 32, 32), "timestep": torch.tensor([500.0])}
    return model, example
