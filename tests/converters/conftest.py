"""Small real architectures with random weights (diffusers, transformers, a DCGAN) for converter tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn


def tiny_unet2d():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64),
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
                       attention_head_dim=8).eval()


def tiny_unet_cond():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=8).eval()


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32), latent_channels=4,
                         layers_per_block=1, norm_num_groups=8, sample_size=16).eval()


def tiny_clip():
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    cfg = CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, eos_token_id=2)
    return CLIPTextModel(cfg).eval()


class DCGANGenerator(nn.Module):
    """DCGAN-style: z [B, 16, 1, 1] -> ConvTranspose/BatchNorm/ReLU x3 -> tanh image [B, 3, 16, 16]."""

    def __init__(self, nz: int = 16, ngf: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, 3, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def tiny_dcgan() -> DCGANGenerator:
    torch.manual_seed(0)
    g = DCGANGenerator()
    # Non-trivial running statistics, as a trained generator has.
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return g.eval()


def write_clip_tokenizer(folder: Path) -> None:
    """A byte-level CLIP BPE vocabulary with no merges: valid, tiny, and built offline."""
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
    tok = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=16)
    tok.save_pretrained(str(folder))
    (folder / "tokenizer.json").unlink(missing_ok=True)  # the converter must build it itself


def write_diffusers_folder(root: Path) -> Path:
    """A Stable-Diffusion-style folder saved with save_pretrained (safetensors), as users hold one."""
    from diffusers import DDIMScheduler

    root.mkdir(parents=True, exist_ok=True)
    tiny_unet_cond().save_pretrained(str(root / "unet"), safe_serialization=True)
    tiny_vae().save_pretrained(str(root / "vae"), safe_serialization=True)
    tiny_clip().save_pretrained(str(root / "text_encoder"), safe_serialization=True)
    write_clip_tokenizer(root / "tokenizer")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  set_alpha_to_one=False, steps_offset=1).save_pretrained(str(root / "scheduler"))
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"]}))
    return root


@pytest.fixture(scope="session")
def diffusers_folder(tmp_path_factory) -> Path:
    return write_diffusers_folder(tmp_path_factory.mktemp("sd") / "tiny-sd")


def rel_l2(bundle, component: str, fmt: str, precision: str, variant: str = "") -> float:
    return float(bundle.artifact(component, fmt, precision, variant).validation["rel_l2"])


def board_with_cap(folder: Path, name: str, cap_mb: int) -> Path:
    """A user's board profile (the Pi Zero 2 W's, ONNX Runtime on CPU, fp32) with its own cap."""
    import re

    text = (Path(__file__).resolve().parents[2] / "boards" / "rpi-zero-2w.toml").read_text()
    text = re.sub(r'(?m)^name = .*$', f'name = "{name}"', text)
    text = re.sub(r'(?m)^cap_mb = .*$', f'cap_mb = {int(cap_mb)}', text)
    text = re.sub(r'(?m)^ram_mb = .*$', f'ram_mb = {int(cap_mb) + 160}', text)
    text = re.sub(r'(?m)^preference = .*$', 'preference = ["onnxruntime:cpu"]', text)
    text = re.sub(r'(?m)^(default|decoder) = \[.*$', r'\1 = ["fp32"]', text)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def arch():
    """The builders, for test modules (which cannot import conftest under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(unet2d=tiny_unet2d, unet_cond=tiny_unet_cond, vae=tiny_vae, clip=tiny_clip,
                           dcgan=tiny_dcgan, rel_l2=rel_l2, write_diffusers_folder=write_diffusers_folder,
                           make_taesd=make_taesd, make_kl8=make_kl8, make_lora=make_lora, lora_scale=LORA_SCALE,
                           board_with_cap=board_with_cap)


# A small English corpus for a CLIP-format BPE (vocab.json + merges.txt), learned here because no
# hub is reachable; the tokenizer files then have real merges, as SD 1.x/2.x/SDXL folders ship them.
_CORPUS = ("a photograph of an astronaut riding a horse on the moon, highly detailed, sharp focus, "
           "a painting of a cat sitting in the garden, oil on canvas, trending on artstation, "
           "portrait of a woman with red hair, studio lighting, 4k, the quick brown fox jumps over the lazy dog")


def write_clip_bpe_tokenizer(folder: Path, *, pad_token: str = "<|endoftext|>", merges: int = 150,
                             model_max_length: int = 77) -> None:
    """vocab.json + merges.txt in CLIP's format (byte-level symbols, '</w>' word ends, BOS/EOS last),
    with BPE merges learned on _CORPUS, and the tokenizer_config transformers writes for them."""
    import re
    from collections import Counter

    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    b2u = bytes_to_unicode()
    chars = list(b2u.values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(vocab) + i for i, c in enumerate(chars)})
    words = Counter(re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", _CORPUS.lower()))
    split = {w: [b2u[b] for b in w.encode()][:-1] + [b2u[w.encode()[-1]] + "</w>"] for w in words}
    merge_list = []
    for _ in range(merges):
        pairs = Counter()
        for w, n in words.items():
            s = split[w]
            for a, b in zip(s, s[1:], strict=False):
                pairs[a, b] += n
        if not pairs:
            break
        (a, b), _n = pairs.most_common(1)[0]
        merge_list.append(f"{a} {b}")
        vocab.setdefault(a + b, len(vocab))
        for w in words:
            s, out, i = split[w], [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            split[w] = out
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merge_list) + "\n")
    tok = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"),
                        model_max_length=model_max_length, pad_token=pad_token)
    tok.save_pretrained(str(folder))
    (folder / "tokenizer.json").unlink(missing_ok=True)  # SD layout: vocab.json + merges.txt only


def write_hub_sd_folder(root: Path, *, scheduler=None, pad_token: str = "<|endoftext|>") -> Path:
    """The SD 1.x hub layout at test dimensions: 77-token CLIP text encoder over a BPE tokenizer with
    merges, UNet, VAE, and ``scheduler`` (default DDIM as SD ships it), all via save_pretrained."""
    from diffusers import DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    root.mkdir(parents=True, exist_ok=True)
    write_clip_bpe_tokenizer(root / "tokenizer", pad_token=pad_token)
    n_vocab = len(json.loads((root / "tokenizer" / "vocab.json").read_text()))
    torch.manual_seed(0)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=n_vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=77,
                                      bos_token_id=n_vocab - 2, eos_token_id=n_vocab - 1)).eval()
    te.save_pretrained(str(root / "text_encoder"))
    tiny_unet_cond().save_pretrained(str(root / "unet"))
    tiny_vae().save_pretrained(str(root / "vae"))
    (scheduler or DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                set_alpha_to_one=False, steps_offset=1)).save_pretrained(str(root / "scheduler"))
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", type(scheduler).__name__ if scheduler else "DDIMScheduler"]}))
    return root


@pytest.fixture(scope="session")
def hub_sd_bundle(tmp_path_factory) -> tuple[Path, Path]:
    """(folder, bundle): the SD 1.x hub layout with DPMSolverMultistepScheduler as diffusers writes it
    (``lambda_min_clipped: -Infinity``, the issue's case), converted once to ONNX fp32 (denoiser,
    decoder, text encoder). Read-only: copy before changing."""
    from diffusers import DPMSolverMultistepScheduler

    from edge_sdk.converters.convert import convert

    dpm = DPMSolverMultistepScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                      use_karras_sigmas=True)
    root = write_hub_sd_folder(tmp_path_factory.mktemp("hub") / "sd-dpm", scheduler=dpm)
    out = tmp_path_factory.mktemp("hub-bundle") / "sd-dpm.bundle"
    convert(root, out, components=["denoiser", "decoder", "text_encoder"], samples=1)
    return root, out


# -- one convert shared by the LoRA, --vae and --tiny-vae tests ------------------------------------
LORA_SCALE = 0.7


def make_lora(out: Path) -> Path:
    """A LoRA for ``diffusers_folder``'s UNet and text encoder, built with PEFT (random A and B) and
    saved by diffusers' ``save_lora_weights`` (``unet.*`` and ``text_encoder.*`` keys), as the
    diffusers training scripts write one. Beside it, ``te_lora_peft.safetensors``: the text
    encoder's A and B as PEFT holds them, for a reference fused by hand (W + scale * B @ A)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    unet, te = tiny_unet_cond(), tiny_clip()
    torch.manual_seed(1)
    # init_lora_weights=False: random A and B, so the LoRA changes the outputs (a zero B would not).
    unet.add_adapter(LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    # PEFT directly (transformers' add_adapter wants a PEFT newer than any published); alpha = r,
    # as diffusers assumes for a file without alphas.
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                       target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]), te)
    te_state = get_peft_model_state_dict(te)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in te_state.items()}, str(out / "te_lora_peft.safetensors"))
    StableDiffusionPipeline.save_lora_weights(
        str(out), unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(te_state), safe_serialization=True)
    return out / "pytorch_lora_weights.safetensors"


def make_taesd(out: Path) -> Path:
    from diffusers import AutoencoderTiny

    torch.manual_seed(2)
    AutoencoderTiny(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4,
                    num_encoder_blocks=(1,) * 4, num_decoder_blocks=(1,) * 4,
                    latent_channels=4).save_pretrained(str(out))
    return out


def make_kl8(out: Path) -> Path:
    """An AutoencoderKL with SD's 8 px per latent cell (the folder's own VAE makes 2), for --vae."""
    from diffusers import AutoencoderKL

    torch.manual_seed(3)
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16,) * 4, latent_channels=4,
                  layers_per_block=1, norm_num_groups=8, sample_size=64).save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def lora_taesd(diffusers_folder, tmp_path_factory):
    """``diffusers_folder`` converted once (ONNX fp32: denoiser, decoder, text encoder) with a UNet +
    text-encoder LoRA at LORA_SCALE, ``--vae`` an 8x AutoencoderKL and ``--tiny-vae`` a TAESD.
    Returns (bundle, lora file, TAESD folder, AutoencoderKL folder). Read-only."""
    from edge_sdk.converters.convert import convert

    tmp = tmp_path_factory.mktemp("lora")
    lora, taesd, kl8 = make_lora(tmp / "lora"), make_taesd(tmp / "taesd"), make_kl8(tmp / "kl8")
    b = convert(diffusers_folder, tmp / "lora.bundle", components=["denoiser", "decoder", "text_encoder"], samples=1,
                loras=[f"{lora}:{LORA_SCALE}"], vae=kl8, tiny_vae=taesd)
    return b, lora, taesd, kl8
