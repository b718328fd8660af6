"""Torch architectures of the demo model: a tiny VAE, a class-conditional latent denoiser and a
small classifier used to measure generation quality.

Host side only (imports torch). Every module is fully convolutional (conv, GroupNorm, SiLU,
nearest upsampling, add/mul, an embedding table and a sin/cos timestep embedding), so each one
exports to ONNX, OpenVINO and LiteRT and runs on any spatial size that is a multiple of its
downsampling: images a multiple of 8, latents a multiple of 2.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "VAEEncoder",
    "VAEDecoder",
    "TinyVAE",
    "ClassConditionalDenoiser",
    "DigitClassifier",
    "count_parameters",
]


def _norm(channels: int) -> nn.GroupNorm:
    # 8 groups divides every channel count used here; eps as in diffusers' blocks.
    return nn.GroupNorm(8, channels, eps=1e-6)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a residual; optionally shifted by a per-channel embedding."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int | None = None) -> None:
        super().__init__()
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        # The embedding acts per channel (broadcast over H and W), so no layer sees spatial size.
        self.emb_proj = nn.Linear(emb_dim, out_ch) if emb_dim is not None else None
        self.norm2 = _norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb_proj is not None and emb is not None:
            h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Upsample(nn.Module):
    """Nearest x2 then a 3x3 conv (no checkerboard artefacts, exports everywhere)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class VAEEncoder(nn.Module):
    """Image in [-1, 1], B x 3 x H x W -> latent mean, B x latent_channels x H/4 x W/4."""

    def __init__(self, latent_channels: int = 4, channels: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        c0, c1 = channels
        self.conv_in = nn.Conv2d(3, c0, 3, padding=1)
        self.block0 = ResBlock(c0, c0)
        self.down0 = nn.Conv2d(c0, c0, 3, stride=2, padding=1)
        self.block1 = ResBlock(c0, c1)
        self.down1 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)
        self.block2 = ResBlock(c1, c1)
        self.norm_out = _norm(c1)
        self.conv_out = nn.Conv2d(c1, latent_channels, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.block0(self.conv_in(image))
        h = self.block1(self.down0(h))
        h = self.block2(self.down1(h))
        return self.conv_out(F.silu(self.norm_out(h)))


class VAEDecoder(nn.Module):
    """Latent (unscaled), B x latent_channels x h x w -> image in [-1, 1], B x 3 x 4h x 4w."""

    def __init__(self, latent_channels: int = 4, channels: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        c0, c1 = channels
        self.conv_in = nn.Conv2d(latent_channels, c1, 3, padding=1)
        self.block0 = ResBlock(c1, c1)
        self.up0 = Upsample(c1)
        self.block1 = ResBlock(c1, c0)
        self.up1 = Upsample(c0)
        self.block2 = ResBlock(c0, c0)
        self.norm_out = _norm(c0)
        self.conv_out = nn.Conv2d(c0, 3, 3, padding=1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        h = self.block0(self.conv_in(latent))
        h = self.block1(self.up0(h))
        h = self.block2(self.up1(h))
        # tanh keeps the output in [-1, 1] whatever latent a sampler hands over.
        return torch.tanh(self.conv_out(F.silu(self.norm_out(h))))


class TinyVAE(nn.Module):
    """Autoencoder with downsample factor 4; encoder and decoder are usable on their own."""

    downsample_factor = 4

    def __init__(self, latent_channels: int = 4, channels: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        self.encoder = VAEEncoder(latent_channels, channels)
        self.decoder = VAEDecoder(latent_channels, channels)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(image))


class TimestepEmbedding(nn.Module):
    """Sinusoidal embedding of a float timestep (diffusers' flip_sin_to_cos=True layout)."""

    def __init__(self, dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        # Not persistent: derived from dim, so the weight files hold only learned tensors.
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        args = timestep.to(torch.float32)[:, None] * self.freqs[None, :]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ClassConditionalDenoiser(nn.Module):
    """Latent UNet: (sample B x C x h x w, timestep float32 [B], class_labels int64 [B]) -> noise.

    Class index ``num_classes`` is the null class used for classifier-free guidance.
    One internal downsample, so h and w must be even.
    """

    def __init__(
        self,
        num_classes: int = 10,
        latent_channels: int = 4,
        channels: tuple[int, int] = (64, 128),
        emb_dim: int = 128,
    ) -> None:
        super().__init__()
        c0, c1 = channels
        self.num_classes = num_classes
        self.time_embed = TimestepEmbedding(c0)
        self.time_mlp = nn.Sequential(nn.Linear(c0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_embed = nn.Embedding(num_classes + 1, emb_dim)
        self.conv_in = nn.Conv2d(latent_channels, c0, 3, padding=1)
        self.down_block0 = ResBlock(c0, c0, emb_dim)
        self.down = nn.Conv2d(c0, c0, 3, stride=2, padding=1)
        self.down_block1 = ResBlock(c0, c1, emb_dim)
        self.mid_block = ResBlock(c1, c1, emb_dim)
        self.up_block1 = ResBlock(c1 + c1, c1, emb_dim)
        self.up = Upsample(c1)
        self.up_block0 = ResBlock(c1 + c0, c0, emb_dim)
        self.norm_out = _norm(c0)
        self.conv_out = nn.Conv2d(c0, latent_channels, 3, padding=1)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor
    ) -> torch.Tensor:
        emb = self.time_mlp(self.time_embed(timestep)) + self.class_embed(class_labels)
        h0 = self.down_block0(self.conv_in(sample), emb)
        h1 = self.down_block1(self.down(h0), emb)
        h = self.mid_block(h1, emb)
        h = self.up_block1(torch.cat([h, h1], dim=1), emb)
        h = self.up_block0(torch.cat([self.up(h), h0], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))


class DigitClassifier(nn.Module):
    """Image in [-1, 1], B x 3 x H x W -> class logits B x num_classes (global average pool)."""

    def __init__(self, num_classes: int = 10, channels: tuple[int, int, int] = (32, 64, 64)) -> None:
        super().__init__()
        c0, c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(3, c0, 3, padding=1),
            _norm(c0),
            nn.SiLU(),
            nn.Conv2d(c0, c1, 3, stride=2, padding=1),
            _norm(c1),
            nn.SiLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            _norm(c2),
            nn.SiLU(),
            nn.Conv2d(c2, c2, 3, padding=1),
            _norm(c2),
            nn.SiLU(),
        )
        # A 1x1 conv then a spatial mean: logits for any input size.
        self.head = nn.Conv2d(c2, num_classes, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image)).mean(dim=(2, 3))


def count_parameters(module: nn.Module) -> int:
    """Number of learned parameters of a module."""
    return sum(p.numel() for p in module.parameters())
