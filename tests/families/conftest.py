"""Hub-layout folders of every model family, written at test dimensions by diffusers' and
transformers' own classes with ``save_pretrained`` (random weights), converted once per session.

Each folder is laid out as the published checkpoint is (model_index.json, unet/, vae/,
text_encoder[_2]/, tokenizer[_2]/, scheduler/); only the dimensions are tiny, so a convert takes
seconds. Bundles are ONNX fp32 and shared by every test of the session: copy before changing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

HEADS = 8
TEXT_LEN = 16


def _tokenizer(folder: Path, pad: str | None = None) -> None:
    """A byte-level CLIP BPE vocabulary with no merges, saved by CLIPTokenizer (no tokenizer.json:
    the converter builds it, as for the hub folders that ship only vocab.json + merges.txt)."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(vocab) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    kw = {"pad_token": pad} if pad else {}
    tok = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"),
                        model_max_length=TEXT_LEN, **kw)
    tok.save_pretrained(str(folder))
    (folder / "tokenizer.json").unlink(missing_ok=True)


def _clip(hidden: int, projection: int | None = None, seed: int = 0):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=1000, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=TEXT_LEN, eos_token_id=2,
                         projection_dim=projection or hidden)
    return (CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)).eval()


def _vae():
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32), latent_channels=4,
                         layers_per_block=1, norm_num_groups=8, sample_size=16).eval()


def _unet(cross: int, **extra):
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(2)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross,
                                attention_head_dim=HEADS, norm_num_groups=8, **extra).eval()


def write_sd(root: Path, scheduler, *, pipeline: str = "StableDiffusionPipeline", unet_extra: dict | None = None) -> Path:
    """SD 1.x / 2.x / SD-Turbo / LCM layout: one CLIPTextModel, the given scheduler instance."""
    root.mkdir(parents=True, exist_ok=True)
    _unet(32, **(unet_extra or {})).save_pretrained(str(root / "unet"))
    _vae().save_pretrained(str(root / "vae"))
    _clip(32).save_pretrained(str(root / "text_encoder"))
    _tokenizer(root / "tokenizer")
    scheduler.save_pretrained(str(root / "scheduler"))
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": pipeline, "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", type(scheduler).__name__], "safety_checker": [None, None],
        "feature_extractor": [None, None], "requires_safety_checker": False}))
    return root


def write_sdxl(root: Path, scheduler, *, force_zeros: bool = True) -> Path:
    """SDXL base / Turbo layout: CLIPTextModel + CLIPTextModelWithProjection, text_time UNet."""
    root.mkdir(parents=True, exist_ok=True)
    _unet(64, addition_embed_type="text_time", addition_time_embed_dim=8,
          projection_class_embeddings_input_dim=8 * 6 + 32,
          transformer_layers_per_block=1).save_pretrained(str(root / "unet"))
    _vae().save_pretrained(str(root / "vae"))
    _clip(32, seed=3).save_pretrained(str(root / "text_encoder"))
    _clip(32, projection=32, seed=4).save_pretrained(str(root / "text_encoder_2"))
    _tokenizer(root / "tokenizer")
    _tokenizer(root / "tokenizer_2", pad="!")  # SDXL's second tokenizer pads with "!", as published
    scheduler.save_pretrained(str(root / "scheduler"))
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.42.1",
        "force_zeros_for_empty_prompt": force_zeros,
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", type(scheduler).__name__]}))
    return root


def write_unet2d(root: Path, scheduler, num_class_embeds: int | None = None) -> Path:
    """DDPMPipeline layout: unet/ (UNet2DModel, pixel space) and scheduler/ only."""
    import torch
    from diffusers import UNet2DModel

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(5)
    UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
                down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                norm_num_groups=8, attention_head_dim=8,
                num_class_embeds=num_class_embeds).eval().save_pretrained(str(root / "unet"))
    scheduler.save_pretrained(str(root / "scheduler"))
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "DDPMPipeline", "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", type(scheduler).__name__]}))
    return root


SD_SCHED = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def _folders() -> dict:
    """family name -> (writer, scheduler factory); the scheduler configs are the published ones'."""
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        LCMScheduler,
        PNDMScheduler,
    )

    return {
        # SD 1.5 ships PNDM (skip_prk_steps, leading, steps_offset 1).
        "sd1": lambda p: write_sd(p / "sd1", PNDMScheduler(**SD_SCHED, skip_prk_steps=True, set_alpha_to_one=False,
                                                           steps_offset=1)),
        # SD 2.1 (768-v) ships DDIM with v-prediction.
        "sd2": lambda p: write_sd(p / "sd2", DDIMScheduler(**SD_SCHED, prediction_type="v_prediction",
                                                           clip_sample=False, set_alpha_to_one=False,
                                                           steps_offset=1, timestep_spacing="leading")),
        "sd-turbo": lambda p: write_sd(p / "sd-turbo", EulerDiscreteScheduler(**SD_SCHED, timestep_spacing="trailing")),
        "lcm": lambda p: write_sd(p / "lcm", LCMScheduler(**SD_SCHED, set_alpha_to_one=True),
                                  pipeline="LatentConsistencyModelPipeline", unet_extra={"time_cond_proj_dim": 32}),
        "sdxl": lambda p: write_sdxl(p / "sdxl", EulerDiscreteScheduler(**SD_SCHED, steps_offset=1,
                                                                        timestep_spacing="leading")),
        "sdxl-turbo": lambda p: write_sdxl(p / "sdxl-turbo", EulerAncestralDiscreteScheduler(
            **SD_SCHED, timestep_spacing="trailing")),
        "unet2d": lambda p: write_unet2d(p / "ddpm", DDPMScheduler()),
        "unet2d-class": lambda p: write_unet2d(p / "ddpm-class", DDIMScheduler(), num_class_embeds=10),
    }


@pytest.fixture(scope="session")
def family_folder(tmp_path_factory):
    """family -> its hub-layout folder (written once per session, on first use)."""
    root = tmp_path_factory.mktemp("families")
    made: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in made:
            made[family] = _folders()[family](root)
        return made[family]

    return get


@pytest.fixture(scope="session")
def family_bundle(family_folder, tmp_path_factory):
    """family -> its ONNX fp32 bundle, converted with `edge-sdk convert`'s API once per session."""
    import edge_sdk

    root = tmp_path_factory.mktemp("family-bundles")
    made: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in made:
            out = root / f"{family}.bundle"
            edge_sdk.convert(family_folder(family), out, formats="onnx", precisions="fp32",
                             components=_components(family_folder(family)))
            made[family] = out
        return made[family]

    return get


def _components(folder: Path) -> list[str]:
    # The VAE encoder (img2img) is left out: these tests are txt2img, and it halves the convert.
    return [c for c in ("denoiser", "decoder", "text_encoder") if c == "denoiser" or (folder / {
        "decoder": "vae", "text_encoder": "text_encoder"}[c]).is_dir()]
