"""The SD-shaped diffusers folder the peers are timed on, written by diffusers' own save_pretrained.

Stable Diffusion 1.x's layout at a fraction of its width: ``UNet2DConditionModel`` with 64/128/256
channels (cross-attention at the three finest levels, two resnets per level, 8 heads, as SD 1.5),
``AutoencoderKL`` with 4 levels (8x down/upsampling, mid-block attention), a 4-layer CLIP text
encoder over a 77-token byte-level CLIP BPE tokenizer, DDIM with SD's scheduler config. Weights
are seeded random: speed does not depend on them, and image quality is measured against PyTorch
fp32 on the same weights, not judged by eye.
"""

from __future__ import annotations

import json
from pathlib import Path

TEXT_DIM = 128
UNET = dict(sample_size=32, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(64, 128, 256),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TEXT_DIM, attention_head_dim=8, norm_num_groups=32)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=256,
           block_out_channels=(32, 64, 128, 128), down_block_types=("DownEncoderBlock2D",) * 4,
           up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, scaling_factor=0.18215)
DDIM = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
            set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")


def write_tokenizer(folder: Path) -> None:
    """CLIP's tokenizer format (vocab.json + merges.txt, byte-level symbols, BOS/EOS last) with no
    merges: valid for every peer's tokenizer converter, and built offline (no hub here)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(vocab) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def legacy_text_encoder_keys(path: Path) -> None:
    """Key names as the hub's SD folders have them ('text_model.' prefix). transformers 5 saves
    CLIPTextModel without it, and transformers 4 (the peers' environment) then leaves every weight
    randomly initialized, with a warning only; transformers 5 reads both."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(path))
    if all(k.startswith("text_model.") for k in tensors):
        return
    save_file({k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in tensors.items()}, str(path),
              metadata={"format": "pt"})


def write_sd_shaped_folder(root: Path) -> Path:
    """Write the folder (a StableDiffusionPipeline's save_pretrained) unless it is already complete."""
    if (root / "model_index.json").is_file():
        return root
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tmp = root.with_name(root.name + ".partial")
    write_tokenizer(tmp / "tokenizer-src")
    tok = CLIPTokenizer(vocab=str(tmp / "tokenizer-src" / "vocab.json"),
                        merges=str(tmp / "tokenizer-src" / "merges.txt"), model_max_length=77)
    n_vocab = len(tok)
    if n_vocab < 500:  # transformers' keyword names moved once (vocab_file=...): a 2-token vocabulary
        raise RuntimeError(f"the CLIP tokenizer read {n_vocab} tokens from {tmp / 'tokenizer-src'}")
    torch.manual_seed(0)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=n_vocab, hidden_size=TEXT_DIM, intermediate_size=4 * TEXT_DIM,
                                      num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=77,
                                      projection_dim=TEXT_DIM, hidden_act="quick_gelu",
                                      bos_token_id=n_vocab - 2, eos_token_id=n_vocab - 1)).eval()
    pipe = StableDiffusionPipeline(vae=AutoencoderKL(**VAE).eval(), text_encoder=te, tokenizer=tok,
                                   unet=UNet2DConditionModel(**UNET).eval(), scheduler=DDIMScheduler(**DDIM),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(tmp))
    import shutil

    shutil.rmtree(tmp / "tokenizer-src")
    # transformers >= 5 saves tokenizer.json only; the slow CLIPTokenizer of transformers 4 (the
    # peers' environment) reads vocab.json + merges.txt, as the SD hub folders ship them.
    write_tokenizer(tmp / "tokenizer")
    legacy_text_encoder_keys(tmp / "text_encoder" / "model.safetensors")
    tmp.rename(root)
    return root


if __name__ == "__main__":
    import sys

    print(write_sd_shaped_folder(Path(sys.argv[1])))
