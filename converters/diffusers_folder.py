"""A local diffusers-style folder (model_index.json + unet/ vae/ text_encoder/ tokenizer/ scheduler/).

Read from disk only (``local_files_only``, HF_HUB_OFFLINE): never a hub. Weights come from
safetensors, or from ``.bin`` files through diffusers/transformers, which load them with
``torch.load(weights_only=True)``, so no pickled code runs. Each part becomes a component:
UNet -> denoiser, AutoencoderKL -> decoder (takes latents already divided by scaling_factor) and
encoder (returns the latent distribution's mean), CLIPTextModel -> text_encoder (tokenizer.json
copied beside it), scheduler_config.json -> the bundle's sampler section.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_sdk.converters import families
from edge_sdk.converters.spec import ComponentSpec, ModelSpec
from edge_sdk.errors import ModelSourceError

MODEL_INDEX = "model_index.json"



def is_diffusers_folder(path: Path) -> bool:
    return path.is_dir() and (path / MODEL_INDEX).is_file()


class UNetDenoiser(nn.Module):
    """(sample, timestep[, class_labels | encoder_hidden_states][, extras...]) -> noise_pred as a plain tensor.

    ``extras`` names the UNet's further inputs in order: ``text_embeds`` and ``time_ids`` (SDXL's
    ``added_cond_kwargs``), ``timestep_cond`` (an LCM-distilled UNet's guidance embedding).
    """

    def __init__(self, unet: nn.Module, conditioning: str, extras: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.unet = unet
        self.conditioning = conditioning
        self.extras = extras

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor | None = None,
                *extra: torch.Tensor) -> torch.Tensor:
        kw = dict(zip(self.extras, extra, strict=False))
        added = {k: kw.pop(k) for k in ("text_embeds", "time_ids") if k in kw}
        if added:
            kw["added_cond_kwargs"] = added
        if self.conditioning == "text":
            return self.unet(sample, timestep, encoder_hidden_states=cond, return_dict=False, **kw)[0]
        if self.conditioning == "class":
            return self.unet(sample, timestep, class_labels=cond, return_dict=False)[0]
        return self.unet(sample, timestep, return_dict=False)[0]


class VaeDecoder(nn.Module):
    """latent (already divided by scaling_factor) -> image in about [-1, 1]."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent, return_dict=False)[0]


class TinyDecoder(nn.Module):
    """A tiny autoencoder's (TAESD) decoder behind the full VAE's decoder interface, so the
    pipeline feeds it exactly what it feeds the full one: latent / scale + shift of the full VAE
    in, image in [-1, 1] out. TAESD itself wants the latents in its own scale (1.0 for the SD
    family, i.e. the sampler's latents as they are), so the wrapper converts between the two."""

    def __init__(self, tiny: nn.Module, scale: float, shift: float) -> None:
        super().__init__()
        self.tiny = tiny
        self.scale, self.shift = float(scale), float(shift)
        self.tiny_scale = float(tiny.config.scaling_factor)
        self.tiny_shift = float(getattr(tiny.config, "shift_factor", None) or 0.0)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        z = (latent - self.shift) * self.scale  # the sampler's latents
        return self.tiny.decode(z / self.tiny_scale + self.tiny_shift, return_dict=False)[0]


class VaeEncoder(nn.Module):
    """image in [-1, 1] -> the latent distribution's mean (not yet times scaling_factor)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.vae.encode(image, return_dict=False)[0]
        # AutoencoderKL returns a distribution; AutoencoderTiny (TAESD) the latents themselves.
        return out if isinstance(out, torch.Tensor) else out.mean


class TextEncoder(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, return_dict=False)[0]


class DualTextEncoder(nn.Module):
    """SDXL's two CLIP encoders as one component: (input_ids, input_ids_2) -> (the penultimate hidden
    states of both, concatenated on the feature axis; text_embeds, the second one's pooled projection)."""

    def __init__(self, model: nn.Module, model_2: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.model_2 = model_2

    def forward(self, input_ids: torch.Tensor, input_ids_2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = self.model(input_ids=input_ids, output_hidden_states=True).hidden_states[-2]
        out2 = self.model_2(input_ids=input_ids_2, output_hidden_states=True)
        return torch.cat([h1, out2.hidden_states[-2]], dim=-1), out2.text_embeds


@contextlib.contextmanager
def _offline():
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelSourceError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelSourceError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ModelSourceError(f"{path} must hold a JSON object")
    return data


def _load(cls, folder: Path, what: str, variant: str | None = None):
    if not folder.is_dir():
        raise ModelSourceError(f"diffusers folder has no {folder.name}/ for the {what}")
    from edge_sdk.converters.checkpoints import check_safetensors
    from edge_sdk.converters.weight_files import check_indexes, pick_variant

    variant = pick_variant(folder, variant, what)
    check_indexes(folder)
    for f in folder.glob("*.safetensors"):  # our header checks (caps, duplicate keys) before safetensors'
        check_safetensors(f)
    try:
        with _offline():
            # float32 whatever the files hold (fp16 variants): exports and validation run in fp32.
            return cls.from_pretrained(str(folder), local_files_only=True, variant=variant,
                                       torch_dtype=torch.float32).eval()
    except ModelSourceError:
        raise
    except Exception as e:  # noqa: BLE001 - diffusers/transformers raise OSError, ValueError, ...
        raise ModelSourceError(f"cannot load the {what} from {folder}: {str(e).splitlines()[0][:300]}") from None


VAE_CLASSES = ("AutoencoderKL", "AutoencoderTiny")


def _vae_class(folder: Path):
    import diffusers

    name = _read_json(folder / "config.json").get("_class_name", "AutoencoderKL")
    if name not in VAE_CLASSES:
        raise ModelSourceError(f"VAE {folder}: {name!r} is not a VAE edge-sdk converts",
                               hint=f"use one of {', '.join(VAE_CLASSES)}")
    return getattr(diffusers, name)


def _vae_downsample(vae: nn.Module, latent_channels: int) -> int:
    """Pixels per latent cell, measured by decoding an 8x8 latent (block counts differ per class)."""
    with torch.no_grad():
        out = vae.decode(torch.zeros(1, latent_channels, 8, 8), return_dict=False)[0]
    return int(out.shape[-1]) // 8


def _tokenizer_json(folder: Path, work: Path) -> Path:
    """tokenizer.json for the folder's tokenizer, built offline from vocab.json/merges.txt if needed."""
    if (folder / "tokenizer.json").is_file():
        return folder / "tokenizer.json"
    try:
        import transformers

        # transformers 5 made CLIPTokenizer the tokenizers-backed one; 4.x calls it CLIPTokenizerFast.
        cls = getattr(transformers, "CLIPTokenizerFast", None) or transformers.CLIPTokenizer
        with _offline():
            tok = cls.from_pretrained(str(folder), local_files_only=True)
        backend = getattr(tok, "backend_tokenizer", None) or tok._tokenizer
    except Exception as e:  # noqa: BLE001
        raise ModelSourceError(f"cannot build tokenizer.json from {folder}: {str(e).splitlines()[0][:300]}",
                               hint="the folder needs tokenizer.json, or vocab.json + merges.txt") from None
    out = work / "tokenizer.json"
    backend.save(str(out))
    return out


def _pad_token_id(folder: Path, tokenizer_json: Path) -> int | None:
    """The pad token's id from tokenizer_config.json: the pipeline pads prompts with it when
    tokenizer.json itself has no padding setting (CLIP's usually has none)."""
    pad = None
    for name in ("tokenizer_config.json", "special_tokens_map.json"):  # older folders: only the map
        if pad is None and (folder / name).is_file():
            pad = _read_json(folder / name).get("pad_token")
            pad = pad.get("content") if isinstance(pad, dict) else pad
    if not isinstance(pad, str):
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_json)).token_to_id(pad)


def load_diffusers_folder(path: str | Path, *, name: str | None = None, example_batch: int = 1,
                          variant: str | None = None, loras: list | None = None,
                          vae_folder: str | Path | None = None,
                          tiny_vae_folder: str | Path | None = None) -> ModelSpec:
    """A ModelSpec with every component the folder has (denoiser, decoder, encoder, text_encoder).

    ``variant`` picks ``*.<variant>.safetensors`` weights (e.g. fp16); without it a component
    whose only weights are one variant loads that one. ``loras``: ``FILE[:SCALE]`` LoRAs fused
    into the UNet (recorded with sha256 and scale in the denoiser's config). ``vae_folder``: a
    compatible AutoencoderKL or AutoencoderTiny (TAESD) folder used instead of the folder's vae/.
    ``tiny_vae_folder``: an AutoencoderTiny folder converted as the decoder's ``tiny`` variant, an
    alternative the planner picks where the full decoder does not fit (or only in tiles)."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    description_extra = ""
    root = Path(path)
    index = _read_json(root / MODEL_INDEX)
    from edge_sdk.converters.folder_support import check_folder

    check_folder(root, index)  # SD3/Flux transformers, ControlNet, ...: one clear error first
    comps: dict[str, ComponentSpec] = {}
    model: dict[str, Any] = {"kind": "latent_diffusion"}
    sampler: dict[str, Any] = {}

    unet_cls = (index.get("unet") or [None, None])[1] if isinstance(index.get("unet"), list) else None
    unet_cfg = _read_json(root / "unet" / "config.json")
    cls = UNet2DConditionModel if (unet_cls or unet_cfg.get("_class_name")) == "UNet2DConditionModel" else UNet2DModel
    unet = _load(cls, root / "unet", "denoiser", variant)
    lora_records: list = []
    loaded_loras: list = []
    if loras:  # fused into the weights before anything is exported (converters/lora.py)
        from edge_sdk.converters.lora import LoraRef, fuse_unet, read_loras

        loaded_loras = read_loras([LoraRef.parse(x) for x in loras])
        lora_records = fuse_unet(unet, loaded_loras)
    cfg = unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, (list, tuple)) else (cfg.sample_size, cfg.sample_size)
    size = [int(s) for s in size]
    b = example_batch
    sample = torch.randn(b, cfg.in_channels, *size, generator=torch.Generator().manual_seed(0))
    inputs: dict[str, torch.Tensor] = {"sample": sample, "timestep": torch.full((b,), 500.0)}
    conditioning = "none"
    dyn: dict[str, dict[int, str]] = {"sample": {0: "batch", 2: "height", 3: "width"}, "timestep": {0: "batch"}}
    text_len = None
    family = families.family_of(root, index, unet_cfg)
    extras: dict[str, torch.Tensor] = {}
    if cls is UNet2DConditionModel:
        conditioning = "text"
        te_cfg_path = root / "text_encoder" / "config.json"
        if not te_cfg_path.is_file():
            te_cfg_path = root / "text_encoder_2" / "config.json"
        text_len = int(_read_json(te_cfg_path).get("max_position_embeddings", 77)) if te_cfg_path.is_file() else 77
        dim = int(cfg.cross_attention_dim if not isinstance(cfg.cross_attention_dim, (list, tuple))
                  else cfg.cross_attention_dim[0])
        inputs["encoder_hidden_states"] = torch.randn(b, text_len, dim, generator=torch.Generator().manual_seed(1))
        dyn["encoder_hidden_states"] = {0: "batch"}
        if getattr(cfg, "addition_embed_type", None) == "text_time":
            # SDXL: pooled text embeds + 6 time ids (original size, crop top-left, target size).
            pooled = int(cfg.projection_class_embeddings_input_dim) - 6 * int(cfg.addition_time_embed_dim)
            extras["text_embeds"] = torch.randn(b, pooled, generator=torch.Generator().manual_seed(5))
            extras["time_ids"] = torch.tensor([[size[0] * 8.0, size[1] * 8.0, 0.0, 0.0, size[0] * 8.0,
                                                size[1] * 8.0]] * b)
        elif getattr(cfg, "addition_embed_type", None) is not None:
            raise ModelSourceError(f"{root / 'unet'}: addition_embed_type {cfg.addition_embed_type!r} is not "
                                   "supported", hint="supported: none, or 'text_time' (SDXL)")
        if getattr(cfg, "time_cond_proj_dim", None):
            # LCM-distilled UNet: the guidance scale's sinusoidal embedding is an input.
            extras["timestep_cond"] = torch.randn(b, int(cfg.time_cond_proj_dim),
                                                  generator=torch.Generator().manual_seed(6))
        for k in extras:
            inputs[k] = extras[k]
            dyn[k] = {0: "batch"}
    elif getattr(cfg, "num_class_embeds", None):
        conditioning = "class"
        inputs["class_labels"] = torch.zeros(b, dtype=torch.int64)
        dyn["class_labels"] = {0: "batch"}
        model["num_classes"] = int(cfg.num_class_embeds)
    den = UNetDenoiser(unet, conditioning, tuple(extras)).eval()
    comps["denoiser"] = ComponentSpec(
        role="denoiser", module=den, example_inputs=inputs, output_names=["noise_pred"], dynamic_dims=dyn,
        output_dynamic_dims={"noise_pred": {0: "batch", 2: "height", 3: "width"}},
        config={"class": cls.__name__, "in_channels": int(cfg.in_channels), "family": family,
                **({"loras": lora_records} if lora_records else {})})
    down = 2 ** (len(cfg.block_out_channels) - 1)
    model.update(conditioning=conditioning, sample_size=size, in_channels=int(cfg.in_channels),
                 spatial_multiple=down)
    if text_len:
        model["max_text_length"] = text_len

    vae_dir = Path(vae_folder) if vae_folder is not None else root / "vae"
    if vae_folder is not None and not (vae_dir / "config.json").is_file():
        raise ModelSourceError(f"--vae {vae_dir}: not a VAE folder (no config.json)",
                               hint="give a folder written by AutoencoderKL/AutoencoderTiny.save_pretrained")
    if vae_dir.is_dir():
        vae = _load(_vae_class(vae_dir), vae_dir, "VAE", None if vae_folder is not None else variant)
        vcfg = vae.config
        if int(vcfg.latent_channels) != int(cfg.out_channels):
            raise ModelSourceError(f"VAE {vae_dir}: its latents have {vcfg.latent_channels} channels, the UNet makes "
                                   f"{cfg.out_channels}", hint="give a VAE made for this model family (--vae)")
        vdown = _vae_downsample(vae, int(vcfg.latent_channels))
        model.update(latent_scale_factor=float(vcfg.scaling_factor), vae_downsample=vdown,
                     image_channels=int(vcfg.in_channels), output_range=[-1.0, 1.0])
        if vae_folder is not None:
            description_extra = f"; decoder from {vae_dir.resolve().name} ({type(vae).__name__})"
        if getattr(vcfg, "shift_factor", None) is not None:
            model["latent_shift_factor"] = float(vcfg.shift_factor)
        lat = torch.randn(b, int(vcfg.latent_channels), *size, generator=torch.Generator().manual_seed(2))
        comps["decoder"] = ComponentSpec(
            role="decoder", module=VaeDecoder(vae).eval(), example_inputs={"latent": lat}, output_names=["image"],
            dynamic_dims={"latent": {0: "batch", 2: "height", 3: "width"}},
            output_dynamic_dims={"image": {0: "batch", 2: "out_height", 3: "out_width"}})
        img = torch.rand(b, int(vcfg.in_channels), size[0] * vdown, size[1] * vdown,
                         generator=torch.Generator().manual_seed(3)) * 2 - 1
        comps["encoder"] = ComponentSpec(
            role="encoder", module=VaeEncoder(vae).eval(), example_inputs={"image": img}, output_names=["latent"],
            dynamic_dims={"image": {0: "batch", 2: "height", 3: "width"}},
            output_dynamic_dims={"latent": {0: "batch", 2: "out_height", 3: "out_width"}})
        if tiny_vae_folder is not None:
            comps["decoder"].alternatives["tiny"] = _tiny_decoder(Path(tiny_vae_folder), model, lat, vdown)
            comps["decoder"].config["variants"] = {"tiny": comps["decoder"].alternatives["tiny"].config}
    else:
        if tiny_vae_folder is not None:
            raise ModelSourceError(f"--tiny-vae {tiny_vae_folder}: {root} has no vae/ (a pixel-space model)",
                                   hint="a tiny decoder is an alternative to a VAE decoder; drop --tiny-vae")
        model["kind"] = "pixel_diffusion"
        model["image_channels"] = int(cfg.out_channels)

    if (root / "text_encoder").is_dir():
        comps["text_encoder"] = _text_encoder(root, index, b, variant, loaded_loras)
    if loaded_loras:
        from edge_sdk.converters.lora import check_all_fused

        check_all_fused(loaded_loras, f"the folder {root.name}")

    sched_path = root / "scheduler" / "scheduler_config.json"
    if sched_path.is_file():
        from edge_sdk.converters.scheduler_config import read_scheduler_config

        sampler = families.sampler_section(family, index, read_scheduler_config(sched_path), conditioning)
    return ModelSpec(name=name or root.resolve().name, components=comps, model=model, sampler=sampler,
                     description=f"converted from the diffusers folder {root.resolve().name}{description_extra}")


def _tiny_decoder(folder: Path, model: dict[str, Any], lat: torch.Tensor, vdown: int) -> ComponentSpec:
    """The ``tiny`` variant of the decoder: an AutoencoderTiny folder that decodes the same latents
    to the same image size as the folder's VAE (checked here, so the plan can swap them freely)."""
    from diffusers import AutoencoderTiny

    where = f"--tiny-vae {folder}"
    if not (folder / "config.json").is_file():
        raise ModelSourceError(f"{where}: not a VAE folder (no config.json)",
                               hint="give a folder written by AutoencoderTiny.save_pretrained (TAESD)")
    if _read_json(folder / "config.json").get("_class_name") != "AutoencoderTiny":
        raise ModelSourceError(f"{where}: not an AutoencoderTiny (TAESD) folder",
                               hint="to replace the decoder with another AutoencoderKL, use --vae")
    tiny = _load(AutoencoderTiny, folder, "tiny VAE")
    if int(tiny.config.latent_channels) != lat.shape[1]:
        raise ModelSourceError(f"{where}: its latents have {tiny.config.latent_channels} channels, the model's VAE "
                               f"{lat.shape[1]}", hint="give the TAESD made for this model family")
    tdown = _vae_downsample(tiny, int(tiny.config.latent_channels))
    if tdown != vdown or int(tiny.config.out_channels) != int(model["image_channels"]):
        raise ModelSourceError(f"{where}: it decodes to {tiny.config.out_channels} channels at {tdown} px per latent "
                               f"cell, the model's VAE to {model['image_channels']} at {vdown}",
                               hint="an alternative decoder must make the same image; give the TAESD made for "
                                    "this model family")
    module = TinyDecoder(tiny, model["latent_scale_factor"], model.get("latent_shift_factor", 0.0)).eval()
    params = sum(p.numel() for p in tiny.decoder.parameters())
    return ComponentSpec(
        role="decoder", module=module, example_inputs={"latent": lat}, output_names=["image"],
        dynamic_dims={"latent": {0: "batch", 2: "height", 3: "width"}},
        output_dynamic_dims={"image": {0: "batch", 2: "out_height", 3: "out_width"}},
        config={"class": "AutoencoderTiny", "source": folder.resolve().name, "parameters": int(params),
                "attention": False})  # TAESD's decoder: convolutions and upsampling only


def _tokenizer_files(folder: Path) -> tuple[Path, int | None]:
    work = Path(tempfile.mkdtemp(prefix="edge-sdk-tok-"))
    tj = _tokenizer_json(folder, work)
    return tj, _pad_token_id(folder, tj)


def _text_encoder(root: Path, index: dict[str, Any], b: int, variant: str | None,
                  loras: list | None = None) -> ComponentSpec:
    """text_encoder/ (CLIPTextModel), or with text_encoder_2/ beside it SDXL's pair as one component;
    the text-encoder parts of ``loras`` (read_loras) fused in."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from edge_sdk.converters.lora import fuse_text_encoder

    te = _load(CLIPTextModel, root / "text_encoder", "text encoder", variant)
    lora_records = fuse_text_encoder(te, "text_encoder", loras) if loras else []
    length = int(te.config.max_position_embeddings)
    ids = torch.randint(0, int(te.config.vocab_size), (b, length), generator=torch.Generator().manual_seed(4))
    extra: dict[str, Path] = {}
    config: dict[str, Any] = {"vocab_size": int(te.config.vocab_size), "max_length": length}
    if (root / "tokenizer").is_dir():
        extra["tokenizer.json"], pad_id = _tokenizer_files(root / "tokenizer")
        if pad_id is not None:
            config["pad_token_id"] = pad_id
    if not (root / "text_encoder_2").is_dir():
        if lora_records:
            config["loras"] = lora_records
        return ComponentSpec(
            role="text_encoder", module=TextEncoder(te).eval(), example_inputs={"input_ids": ids},
            output_names=["last_hidden_state"], dynamic_dims={"input_ids": {0: "batch"}},
            output_dynamic_dims={"last_hidden_state": {0: "batch"}}, extra_files=extra, config=config)
    te2 = _load(CLIPTextModelWithProjection, root / "text_encoder_2", "second text encoder", variant)
    for rec in fuse_text_encoder(te2, "text_encoder_2", loras) if loras else []:
        if rec not in lora_records:
            lora_records.append(rec)
    if lora_records:
        config["loras"] = lora_records
    if int(te2.config.max_position_embeddings) != length:
        raise ModelSourceError(f"{root}: text_encoder and text_encoder_2 take {length} and "
                               f"{te2.config.max_position_embeddings} tokens; SDXL needs them equal")
    ids2 = torch.randint(0, int(te2.config.vocab_size), (b, length), generator=torch.Generator().manual_seed(7))
    if (root / "tokenizer_2").is_dir():
        extra["tokenizer_2.json"], pad2 = _tokenizer_files(root / "tokenizer_2")
        if pad2 is not None:
            config["pad_token_id_2"] = pad2
    config["force_zeros_for_empty_prompt"] = bool(index.get("force_zeros_for_empty_prompt", True))
    return ComponentSpec(
        role="text_encoder", module=DualTextEncoder(te, te2).eval(),
        example_inputs={"input_ids": ids, "input_ids_2": ids2}, output_names=["prompt_embeds", "text_embeds"],
        dynamic_dims={"input_ids": {0: "batch"}, "input_ids_2": {0: "batch"}},
        output_dynamic_dims={"prompt_embeds": {0: "batch"}, "text_embeds": {0: "batch"}}, extra_files=extra,
        config=config)
