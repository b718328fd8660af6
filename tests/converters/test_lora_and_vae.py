"""LoRA at convert time and a swapped-in decoder, in one shared convert (``lora_taesd``, conftest):

- a LoRA for the UNet and the text encoder, built with PEFT/diffusers' own APIs at test dimensions
  and saved with save_lora_weights, fused by ``--lora FILE:SCALE``: each exported network equals
  diffusers' own pipeline.load_lora_weights + fuse_lora result, the whole pipeline's image equals
  diffusers' fused pipeline's, and the manifest records file, sha256 and scale per component;
- ``--vae`` with another AutoencoderKL (8 px per latent cell instead of the folder's 2), and with an
  AutoencoderTiny (TAESD) folder: the decoder, scale and downsampling come from it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_sdk.converters.lora import LoraRef
from edge_sdk.errors import ModelSourceError, UsageError


def rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_lora_argument_parsing(tmp_path):
    assert LoraRef.parse("a/b.safetensors") == LoraRef(Path("a/b.safetensors"), 1.0)
    assert LoraRef.parse("a/b.safetensors:0.5") == LoraRef(Path("a/b.safetensors"), 0.5)
    assert LoraRef.parse("C:/x/lcm.safetensors") == LoraRef(Path("C:/x/lcm.safetensors"), 1.0)
    with pytest.raises(UsageError, match="scale inf"):
        LoraRef.parse("x.safetensors:inf")


def _reference_pipe(diffusers_folder, lora: Path, scale: float, kl8=None):
    """The folder in diffusers' own StableDiffusionPipeline with the LoRA fused at ``scale``: the
    UNet part by diffusers (``load_lora_weights`` + ``fuse_lora``), the text-encoder part by hand
    from PEFT's A and B (W += scale * B @ A; alpha = r). diffusers' own text-encoder path goes
    through transformers' ``load_adapter``, which refuses the PEFT installed here (it wants
    >= 0.22, unpublished), so it cannot be the reference. Also returns the pipeline before the
    LoRA, to show the LoRA changes both networks."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline
    from safetensors.torch import load_file

    def load():
        kw = {"vae": AutoencoderKL.from_pretrained(str(kl8))} if kl8 else {}
        return StableDiffusionPipeline.from_pretrained(str(diffusers_folder), safety_checker=None,
                                                       requires_safety_checker=False, local_files_only=True, **kw)

    base, pipe = load(), load()
    unet_only = {k: v for k, v in load_file(str(lora)).items() if k.startswith("unet.")}
    pipe.load_lora_weights(unet_only, adapter_name="test")
    pipe.fuse_lora(lora_scale=scale, adapter_names=["test"], components=["unet"])
    ab = load_file(str(lora.parent / "te_lora_peft.safetensors"))
    with torch.no_grad():
        for key, a in ab.items():
            if key.endswith(".lora_A.weight"):
                layer = pipe.text_encoder.get_submodule(key.removesuffix(".lora_A.weight"))
                layer.weight += scale * ab[key.replace("lora_A", "lora_B")] @ a
    return pipe, base


@pytest.mark.slow
def test_lora_fused_into_exported_unet_and_text_encoder_equals_reference(diffusers_folder, lora_taesd, arch):
    import onnxruntime as ort

    b, lora, _, _ = lora_taesd
    scale = arch.lora_scale
    want = [{"file": lora.name, "sha256": hashlib.sha256(lora.read_bytes()).hexdigest(), "scale": scale}]
    assert b.component("denoiser")["config"]["loras"] == want
    assert b.component("text_encoder")["config"]["loras"] == want

    g = torch.Generator().manual_seed(5)
    sample, t = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([321.0])
    ehs = torch.randn(1, 16, 32, generator=g)
    ids = torch.randint(0, 1000, (1, 16), generator=g)
    pipe, base = _reference_pipe(diffusers_folder, lora, scale)
    with torch.no_grad():
        unet0 = base.unet(sample, t, encoder_hidden_states=ehs).sample.numpy()
        te0 = base.text_encoder(ids)[0].numpy()
        unet_ref = pipe.unet(sample, t, encoder_hidden_states=ehs).sample.numpy()
        te_ref = pipe.text_encoder(ids)[0].numpy()

    def run(component, feeds):
        sess = ort.InferenceSession(str(b.artifact(component, "onnx", "fp32").path), providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        return sess.run(None, dict(zip(names, feeds, strict=False)))[0]

    # The LoRA does change both networks, so equality below means something.
    assert rel(unet_ref, unet0) > 1e-2 and rel(te_ref, te0) > 1e-2
    # fp32 export bar (summation order only), as for every fp32 artifact.
    assert rel(run("denoiser", (sample.numpy(), t.numpy(), ehs.numpy())), unet_ref) < 1e-4
    assert rel(run("text_encoder", (ids.numpy(),)), te_ref) < 1e-4


@pytest.mark.slow
def test_lora_bundle_image_equals_fused_diffusers_pipeline(diffusers_folder, lora_taesd, arch):
    """Prompt -> image through the device pipeline vs StableDiffusionPipeline with the same LoRA
    fused (_reference_pipe) and the same VAE: same starting latents, DDIM (deterministic), 3 steps,
    CFG 3. Tolerance: relative L2 <= 1e-3 on the final image, the families' fp32 parity bar (ONNX
    fp32 vs PyTorch fp32 differ by float reassociation only, ~1e-6 per call)."""
    import edge_sdk
    from edge_sdk.pipelines.seeds import RowNoise

    b, lora, _, kl8 = lora_taesd
    prompt = "a red cat, 1990s photo!"
    with edge_sdk.load(b, plan=_full_decoder_plan(b)) as g:
        r = g.generate(prompt=prompt, steps=3, guidance=3.0, seed=0, sampler="ddim")
    mine = np.clip(r.raw, -1.0, 1.0)
    first = RowNoise(0, 1).draw(r.latents.shape[1:])
    pipe, _ = _reference_pipe(diffusers_folder, lora, arch.lora_scale, kl8)
    with torch.no_grad():
        ref = pipe(prompt, latents=torch.from_numpy(first), num_inference_steps=3, guidance_scale=3.0,
                   output_type="pt").images.numpy() * 2.0 - 1.0
    assert mine.shape == ref.shape == (1, 3, 64, 64)
    assert rel(mine, ref) <= 1e-3, rel(mine, ref)


def _full_decoder_plan(b):
    from edge_sdk.planning.plan import default_plan

    return default_plan(b, runtime="onnxruntime")  # the general artifacts: the full VAE, not the tiny one


def test_bad_lora_files_are_clear_errors(diffusers_folder, tmp_path):
    from edge_sdk.converters.sources import load_source

    with pytest.raises(ModelSourceError, match="no such file"):
        load_source(diffusers_folder, loras=[str(tmp_path / "missing.safetensors")])
    bad = tmp_path / "bad.txt"
    bad.write_text("x")
    with pytest.raises(ModelSourceError, match="expected a .safetensors"):
        load_source(diffusers_folder, loras=[str(bad)])
    with pytest.raises(UsageError, match="--lora applies to diffusers folders only"):
        load_source("examples.tiny:make", loras=[str(bad)])


def test_text_encoder_lora_without_a_text_encoder_is_a_clear_error(diffusers_folder, tmp_path, arch):
    import shutil

    from edge_sdk.converters.sources import load_source

    lora = arch.make_lora(tmp_path / "lora")
    folder = tmp_path / "no-te"
    shutil.copytree(diffusers_folder, folder, ignore=shutil.ignore_patterns("text_encoder"))
    with pytest.raises(ModelSourceError, match="it adapts text_encoder, which the folder no-te does not have"):
        load_source(folder, loras=[str(lora)])


@pytest.mark.slow
def test_vae_swap_decoder_is_exported_and_generates(lora_taesd):
    from diffusers import AutoencoderKL

    from edge_sdk import api

    b, _, _, kl8 = lora_taesd
    ref_vae = AutoencoderKL.from_pretrained(str(kl8))
    assert b.model["latent_scale_factor"] == ref_vae.config.scaling_factor
    assert b.model["vae_downsample"] == 8  # the swapped-in VAE: 8 px per latent cell (the folder's own: 2)
    assert b.artifact("decoder", "onnx", "fp32").validation["rel_l2"] < 1e-4  # fp32 export bar
    assert "decoder from kl8 (AutoencoderKL)" in b.manifest["description"]
    with api.load(b, plan=_full_decoder_plan(b)) as g:
        res = g.generate(prompt="a cat", steps=2, seed=0)
    img = np.asarray(res.images)
    assert img.shape == (1, 64, 64, 3) and img.dtype == np.uint8 and img.std() > 0


def test_tiny_vae_as_the_decoder(diffusers_folder, tmp_path, arch):
    """--vae with an AutoencoderTiny (TAESD) folder: its scale (1.0) and downsampling (8) replace the
    folder VAE's; its export and generation are covered by the tiny-variant tests (test_tiny_decoder)."""
    from diffusers import AutoencoderTiny

    from edge_sdk.converters.sources import load_source

    taesd = arch.make_taesd(tmp_path / "taesd")
    spec = load_source(diffusers_folder, vae=taesd)
    assert spec.model["latent_scale_factor"] == AutoencoderTiny.from_pretrained(str(taesd)).config.scaling_factor == 1.0
    assert spec.model["vae_downsample"] == 8
    assert "AutoencoderTiny" in spec.description
    lat = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = spec.components["decoder"].module(lat)
    assert tuple(out.shape) == (1, 3, 64, 64)


def test_incompatible_vae_is_a_clear_error(diffusers_folder, tmp_path):
    from diffusers import AutoencoderTiny

    from edge_sdk.converters.sources import load_source

    AutoencoderTiny(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4,
                    num_encoder_blocks=(1,) * 4, num_decoder_blocks=(1,) * 4,
                    latent_channels=16).save_pretrained(str(tmp_path / "t16"))
    with pytest.raises(ModelSourceError, match="its latents have 16 channels, the UNet makes 4"):
        load_source(diffusers_folder, vae=tmp_path / "t16")
    with pytest.raises(ModelSourceError, match="not a VAE folder"):
        load_source(diffusers_folder, vae=tmp_path)


@pytest.mark.slow
def test_kohya_text_encoder_lora_fuses_like_the_diffusers_format(diffusers_folder, tmp_path, arch):
    """The same text-encoder LoRA as kohya writes it (``lora_te_text_model_*`` keys, ``lora_down``/
    ``lora_up``, ``alpha`` = rank) and in diffusers' format fuses to the same text encoder.
    Tolerance 1e-6 relative: the same fp32 additions in another order at most."""
    from safetensors.torch import load_file, save_file

    from edge_sdk.converters.sources import load_source

    lora = arch.make_lora(tmp_path / "lora")
    ab = load_file(str(lora.parent / "te_lora_peft.safetensors"))
    kohya = {}
    for key, a in ab.items():
        if key.endswith(".lora_A.weight"):
            path = key.removesuffix(".lora_A.weight")
            name = "lora_te_text_model_" + path.removeprefix("text_model.").replace(".", "_")
            kohya[f"{name}.lora_down.weight"] = a.contiguous()
            kohya[f"{name}.lora_up.weight"] = ab[key.replace("lora_A", "lora_B")].contiguous()
            kohya[f"{name}.alpha"] = torch.tensor(float(a.shape[0]))
    save_file(kohya, str(tmp_path / "kohya_te.safetensors"))
    te_only = {k: v for k, v in load_file(str(lora)).items() if k.startswith("text_encoder.")}
    save_file(te_only, str(tmp_path / "diffusers_te.safetensors"))

    ids = torch.randint(0, 1000, (1, 16), generator=torch.Generator().manual_seed(9))

    def encode(lora_file: str) -> np.ndarray:
        spec = load_source(diffusers_folder, loras=[lora_file])
        assert spec.components["text_encoder"].config["loras"][0]["file"] == Path(lora_file.split(":")[0]).name
        assert "loras" not in spec.components["denoiser"].config  # a text-encoder-only LoRA leaves the UNet
        with torch.no_grad():
            return spec.components["text_encoder"].module(ids).numpy()

    k1, d1 = encode(str(tmp_path / "kohya_te.safetensors")), encode(str(tmp_path / "diffusers_te.safetensors"))
    assert rel(k1, d1) < 1e-6
    with torch.no_grad():
        plain = load_source(diffusers_folder).components["text_encoder"].module(ids).numpy()
    assert rel(k1, plain) > 1e-2  # the LoRA changes the encoder, so the equality above means something
