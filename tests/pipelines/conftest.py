"""Tiny real models for the pipeline tests, converted once per session.

Every model is a real architecture (diffusers UNet2DConditionModel / UNet2DModel / AutoencoderKL,
transformers CLIPTextModel, a DCGAN-style generator) built from a small config with seeded random
weights; the tokenizer is a WordLevel tokenizer trained here with the `tokenizers` library. Each is
put into a bundle by ``edge_sdk.convert`` (ONNX fp32), exactly as a user would.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

# Every diffusion model here uses DDPM's training schedule; the tests pick their sampler.
SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
             "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "timestep_spacing": "leading",
             "steps_offset": 1, "clip_sample": False}
TEXT_LEN = 8  # tokens per prompt (the text encoder's fixed sequence length)
LATENT_SCALE = 0.5  # a scale factor other than 1, so forgetting it changes the image
TRAIN_SENTENCES = [
    "a photo of a red cat sitting on a mat",
    "a painting of a blue dog in the park",
    "a green tree under a cloudy sky",
    "a small house near the river at night",
]


class TextUNet(nn.Module):
    """UNet2DConditionModel as (sample, timestep, encoder_hidden_states) -> noise_pred.

    The forward arguments carry the bundle's input names: the dynamo exporter matches its dynamic
    shapes to them by name.
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample


class ClassUNet(nn.Module):
    """UNet2DModel with class embeddings as (sample, timestep, class_labels) -> noise_pred."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, class_labels):
        return self.unet(sample, timestep, class_labels=class_labels).sample


class VaeDecode(nn.Module):
    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latent):
        return self.vae.decode(latent).sample


class VaeEncodeMean(nn.Module):
    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, image):
        return self.vae.encode(image).latent_dist.mean


class TextHidden(nn.Module):
    def __init__(self, enc: nn.Module) -> None:
        super().__init__()
        self.enc = enc

    def forward(self, input_ids):
        return self.enc(input_ids=input_ids).last_hidden_state


class DCGANGenerator(nn.Module):
    """DCGAN-style: z (+ class embedding) -> 4x4 -> transposed convs -> 16x16 RGB in [-1, 1]."""

    def __init__(self, z_dim: int = 16, num_classes: int = 3, width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, z_dim)
        self.fc = nn.Linear(2 * z_dim, 2 * width * 16)
        self.width = width
        self.net = nn.Sequential(
            nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, 3, 4, 2, 1), nn.Tanh())

    def forward(self, z, class_labels):
        h = self.fc(torch.cat([z, self.embed(class_labels)], dim=1))
        return self.net(h.unflatten(1, (2 * self.width, 4, 4)))


def build_tokenizer(path: Path) -> Path:
    """A WordLevel tokenizer trained on a few sentences, padded/truncated to TEXT_LEN, as tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(TRAIN_SENTENCES, trainers.WordLevelTrainer(
        special_tokens=["<pad>", "<unk>", "<bos>", "<eos>"]))
    bos, eos = tok.token_to_id("<bos>"), tok.token_to_id("<eos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>",
                                                       special_tokens=[("<bos>", bos), ("<eos>", eos)])
    tok.enable_truncation(TEXT_LEN)
    tok.enable_padding(length=TEXT_LEN, pad_id=tok.token_to_id("<pad>"), pad_token="<pad>")
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def text_modules(seed: int = 0) -> dict[str, nn.Module]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                      num_hidden_layers=2, max_position_embeddings=TEXT_LEN, pad_token_id=0,
                                      bos_token_id=2, eos_token_id=3)).eval()
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=32).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(32, 32), layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        latent_channels=4, norm_num_groups=32, sample_size=16, scaling_factor=LATENT_SCALE).eval()
    return {"text_encoder": TextHidden(te).eval(), "denoiser": TextUNet(unet).eval(),
            "decoder": VaeDecode(vae).eval(), "encoder": VaeEncodeMean(vae).eval()}


def build_text_spec(workdir: Path):
    """Text-conditioned latent diffusion: tokenizer + CLIP text encoder + UNet + VAE (both halves)."""
    from edge_sdk.converters.sources import component_from
    from edge_sdk.converters.spec import ModelSpec

    m = text_modules()
    tok = build_tokenizer(Path(workdir) / "tokenizer.json")
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, 20, (1, TEXT_LEN), generator=g)
    comps = {
        "text_encoder": component_from(m["text_encoder"], {"input_ids": ids}, role="text_encoder",
                                       dynamic_dims={"input_ids": {0: "batch"}},
                                       extra_files={"tokenizer.json": tok}),
        "denoiser": component_from(m["denoiser"], {"sample": torch.randn(1, 4, 8, 8, generator=g),
                                                   "timestep": torch.tensor([500.0]),
                                                   "encoder_hidden_states": torch.randn(1, TEXT_LEN, 32, generator=g)},
                                   role="denoiser", dynamic_dims={"sample": {0: "batch"}, "timestep": {0: "batch"},
                                                                  "encoder_hidden_states": {0: "batch"}}),
        "decoder": component_from(m["decoder"], {"latent": torch.randn(1, 4, 8, 8, generator=g)}, role="decoder"),
        "encoder": component_from(m["encoder"], {"image": torch.rand(1, 3, 16, 16, generator=g) * 2 - 1},
                                  role="encoder"),
    }
    model = {"kind": "latent_diffusion", "conditioning": "text", "sample_size": [8, 8], "in_channels": 4,
             "latent_scale_factor": LATENT_SCALE, "vae_downsample": 2, "spatial_multiple": 2, "image_channels": 3,
             "output_range": [-1.0, 1.0], "max_text_length": TEXT_LEN}
    sampler = {"default_sampler": "ddim", "default_steps": 4, "default_guidance": 3.0, "config": SCHEDULER}
    return ModelSpec(name="tiny-text", components=comps, model=model, sampler=sampler), m


def class_module(seed: int = 0) -> nn.Module:
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       num_class_embeds=5, norm_num_groups=32).eval()
    return ClassUNet(unet).eval()


def build_class_spec(workdir: Path | None = None):
    """Class-conditional pixel-space diffusion: 4 classes plus the null class 4 for guidance."""
    from edge_sdk.converters.sources import component_from
    from edge_sdk.converters.spec import ModelSpec

    m = class_module()
    comp = component_from(m, {"sample": torch.randn(1, 3, 8, 8), "timestep": torch.tensor([500.0]),
                              "class_labels": torch.tensor([1])}, role="denoiser",
                          dynamic_dims={"sample": {0: "batch"}, "timestep": {0: "batch"}, "class_labels": {0: "batch"}})
    model = {"kind": "pixel_diffusion", "conditioning": "class", "num_classes": 4, "null_class": 4,
             "sample_size": [8, 8], "in_channels": 3, "image_channels": 3, "spatial_multiple": 4,
             "output_range": [-1.0, 1.0]}
    sampler = {"default_sampler": "ddim", "default_steps": 4, "default_guidance": 1.0, "config": SCHEDULER}
    return ModelSpec(name="tiny-class", components={"denoiser": comp}, model=model, sampler=sampler), m


def build_gan_spec(workdir: Path | None = None):
    from edge_sdk.converters.sources import component_from
    from edge_sdk.converters.spec import ModelSpec

    torch.manual_seed(0)
    gen = DCGANGenerator().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval-mode BN is really exercised
        for bn in (gen.net[0], gen.net[3]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    comp = component_from(gen, {"z": torch.randn(1, 16), "class_labels": torch.tensor([1])}, role="generator",
                          dynamic_dims={"z": {0: "batch"}, "class_labels": {0: "batch"}})
    model = {"kind": "gan", "conditioning": "class", "num_classes": 3, "generator_latent": [16],
             "image_channels": 3, "output_range": [-1.0, 1.0]}
    return ModelSpec(name="tiny-gan", components={"generator": comp}, model=model), gen


# -- session-scoped bundles ----------------------------------------------------------------------
def _convert(builder, tmp_path_factory, name):
    import edge_sdk

    work = tmp_path_factory.mktemp(name)
    spec, modules = builder(work)
    bundle = edge_sdk.convert(spec, work / f"{name}.bundle")
    return bundle, modules


@pytest.fixture(scope="session")
def text_bundle(tmp_path_factory):
    """(Bundle, {role: torch module}) of the text-conditioned latent diffusion model."""
    return _convert(build_text_spec, tmp_path_factory, "text")


@pytest.fixture(scope="session")
def class_bundle(tmp_path_factory):
    return _convert(build_class_spec, tmp_path_factory, "class")


@pytest.fixture(scope="session")
def gan_bundle(tmp_path_factory):
    return _convert(build_gan_spec, tmp_path_factory, "gan")


def write_stream_folder(root: Path, *, widths: tuple[int, int] = (64, 256), groups: int = 32,
                        text_encoder: bool = True) -> Path:
    """A diffusers folder for streaming: a UNet2DConditionModel with every block type the splits know
    (cross-attention down/up blocks, plain ones, the mid block) at 8x8 latents, wide by default, and
    a CLIPTextModel unless ``text_encoder`` is False."""
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=widths,
                         layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                         attention_head_dim=8, norm_num_groups=groups).save_pretrained(str(root / "unet"))
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
             "unet": ["diffusers", "UNet2DConditionModel"]}
    if text_encoder:
        CLIPTextModel(CLIPTextConfig(vocab_size=100, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                     num_attention_heads=4, max_position_embeddings=TEXT_LEN, bos_token_id=0,
                                     eos_token_id=1, pad_token_id=1)).save_pretrained(str(root / "text_encoder"))
        index["text_encoder"] = ["transformers", "CLIPTextModel"]
    (root / "model_index.json").write_text(json.dumps(index))
    return root


@pytest.fixture(scope="session")
def stream_folder():
    """``write_stream_folder``, for test modules (which cannot import conftest under importlib mode)."""
    return write_stream_folder


@pytest.fixture(scope="session")
def streamed_bundle(tmp_path_factory) -> Path:
    """The stream folder's denoiser converted with --stream-parts (ONNX fp32). Read-only: copy before
    changing. Shared by test_streaming.py and test_deep_cache.py."""
    from edge_sdk.converters.convert import convert

    folder = write_stream_folder(tmp_path_factory.mktemp("stream-src") / "wide-sd")
    out = tmp_path_factory.mktemp("stream") / "wide.bundle"
    convert(folder, out, formats="onnx", components=["denoiser"], stream=["denoiser"], samples=1)
    return out


@pytest.fixture(scope="session")
def tokenizer_path(text_bundle):
    bundle, _ = text_bundle
    return bundle.extra_file("text_encoder", "tokenizer.json")


def torch_call(module: nn.Module, *arrays: np.ndarray) -> np.ndarray:
    """Run a torch module on numpy inputs (the reference side of every comparison)."""
    with torch.no_grad():
        out = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
    return out.float().numpy()


def reference_loop(denoise, shape, *, seed: int, sampler: str, steps: int, strength: float | None = None,
                   x0: np.ndarray | None = None) -> np.ndarray:
    """The sampling loop written out plainly: numpy sampler + seeded noise, ``denoise(x, t)`` in torch.

    Only for batch 1 and deterministic samplers, where the seed rule is simply ``randn(seed, shape)``.
    """
    from edge_sdk.samplers import get_sampler, randn

    s = get_sampler(sampler, SCHEDULER)
    noise = randn(seed, shape)
    if x0 is None:
        s.set_timesteps(steps)
        start, x = 0, noise * np.float32(s.init_noise_sigma)
    else:
        start = s.set_timesteps_img2img(steps, strength)
        x = s.add_noise(x0, noise, start)
    for i in range(start, len(s.timesteps)):
        t = np.full((shape[0],), float(s.timesteps[i]), dtype=np.float32)
        x = s.step(denoise(s.scale_model_input(x, i), t), i, x)
    return x


def cfg(uncond: np.ndarray, cond: np.ndarray, scale: float) -> np.ndarray:
    return uncond + np.float32(scale) * (cond - uncond)


@pytest.fixture(scope="session")
def ref():
    """The reference helpers and constants, for test modules (conftest is not importable by name)."""
    from types import SimpleNamespace

    return SimpleNamespace(torch_call=torch_call, reference_loop=reference_loop, cfg=cfg, LATENT_SCALE=LATENT_SCALE,
                           TEXT_LEN=TEXT_LEN, SCHEDULER=SCHEDULER, build_text_spec=build_text_spec)
