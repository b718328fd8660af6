"""The models the benchmarks compare on: the demo model and a Stable-Diffusion-shaped UNet + VAE.

Both are real architectures built from small configs with seeded weights, turned into a
``ModelSpec`` exactly as a user would, and kept as torch modules for the PyTorch eager loop.

- ``demo``: edge-sdk's class-conditional latent diffusion model (converters/demo). Its trained
  weights are used when installed; before they exist the same architecture runs with seeded random
  weights (speed is the same; int8 quality figures then describe random weights, and say so).
- ``sd``: diffusers ``UNet2DConditionModel`` (3 levels, cross-attention at the two finest, like
  SD 1.x's layout at a fraction of the width) + ``AutoencoderKL`` (4 levels: 8x down/upsampling,
  mid-block attention, as SD's VAE), text-conditioned through 8x64 prompt embeddings, SD's
  scheduler config (scaled-linear betas, epsilon prediction) with DPM-Solver++ 2M.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

BENCH_TOLERANCE = 0.5  # relative L2 per call; see bundle_for
SD_TEXT_LEN = 8
SD_TEXT_DIM = 64
SD_SCALE = 0.18215
SD_SCHEDULER = {"_class_name": "DPMSolverMultistepScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085,
                "beta_end": 0.012, "beta_schedule": "scaled_linear", "prediction_type": "epsilon",
                "timestep_spacing": "leading", "steps_offset": 1}
SD_UNET = dict(in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64, 64),
               down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
               cross_attention_dim=SD_TEXT_DIM, attention_head_dim=8, norm_num_groups=16)
SD_VAE = dict(in_channels=3, out_channels=3, block_out_channels=(32, 32, 64, 64), layers_per_block=1,
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
              latent_channels=4, norm_num_groups=16, scaling_factor=SD_SCALE)


class TextUNet(nn.Module):
    """(sample, timestep, encoder_hidden_states) -> noise_pred; argument names are the bundle's inputs."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample


class VaeDecode(nn.Module):
    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latent):
        return self.vae.decode(latent).sample


@dataclass
class BenchModel:
    name: str
    spec: Any  # edge_sdk.converters.spec.ModelSpec
    denoiser: nn.Module
    decoder: nn.Module
    scheduler_config: dict[str, Any]
    latent_scale: float
    downsample: int
    note: str = ""
    formats: tuple[str, ...] = ("onnx", "openvino")

    def key(self) -> str:
        """Cache key of the converted bundle: the config and a digest of the weights."""
        h = hashlib.sha256(json.dumps([self.name, self.spec.model, self.spec.sampler], sort_keys=True,
                                      default=str).encode())
        for m in (self.denoiser, self.decoder):
            for k, v in m.state_dict().items():
                h.update(k.encode())
                h.update(v.detach().contiguous().numpy().tobytes()[:4096])
        return h.hexdigest()[:12]


def sd_model(latent: int = 32) -> BenchModel:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from edge_sdk.converters.sources import component_from
    from edge_sdk.converters.spec import ModelSpec

    torch.manual_seed(0)
    unet = TextUNet(UNet2DConditionModel(sample_size=latent, **SD_UNET).eval()).eval()
    vae = AutoencoderKL(sample_size=latent * 8, **SD_VAE).eval()
    dec = VaeDecode(vae).eval()
    g = torch.Generator().manual_seed(1)
    spatial = {0: "batch", 2: "height", 3: "width"}
    den = component_from(unet, {"sample": torch.randn(1, 4, latent, latent, generator=g),
                                "timestep": torch.tensor([500.0]),
                                "encoder_hidden_states": torch.randn(1, SD_TEXT_LEN, SD_TEXT_DIM, generator=g)},
                         role="denoiser", output_names=["noise_pred"],
                         dynamic_dims={"sample": spatial, "timestep": {0: "batch"},
                                       "encoder_hidden_states": {0: "batch"}},
                         output_dynamic_dims={"noise_pred": spatial})
    decoder = component_from(dec, {"latent": torch.randn(1, 4, latent, latent, generator=g)}, role="decoder",
                             output_names=["image"], dynamic_dims={"latent": spatial},
                             output_dynamic_dims={"image": {0: "batch", 2: "out_height", 3: "out_width"}})
    model = {"kind": "latent_diffusion", "conditioning": "text", "sample_size": [latent, latent], "in_channels": 4,
             "latent_scale_factor": SD_SCALE, "vae_downsample": 8, "spatial_multiple": 4, "image_channels": 3,
             "output_range": [-1.0, 1.0], "max_text_length": SD_TEXT_LEN}
    sampler = {"default_sampler": "dpmpp_2m", "default_steps": 8, "default_guidance": 7.5, "config": SD_SCHEDULER}
    spec = ModelSpec(name="sd-shaped-tiny", components={"denoiser": den, "decoder": decoder}, model=model,
                     sampler=sampler, description="SD-shaped UNet2DConditionModel + AutoencoderKL, seeded weights")
    # ONNX only: exporting and calibrating this UNet a second time for OpenVINO IR costs ~10 more
    # minutes on the 2 shared cores, and OpenVINO reads the ONNX artifacts too.
    return BenchModel("sd", spec, unet, dec, SD_SCHEDULER, SD_SCALE, 8, formats=("onnx",))


def demo_model() -> BenchModel:
    from edge_sdk.converters import demo
    from edge_sdk.converters.demo import spec as demo_spec

    note = ""
    if not all(p.is_file() for p in demo.WEIGHT_FILES.values()):
        # Weights not trained yet: the same architecture with seeded random weights.
        torch.manual_seed(0)
        mods = {k: m.eval() for k, m in demo.build_demo_modules().items()}
        demo.load_demo_modules = lambda: mods  # what demo_spec.factory() calls
        note = "demo weights not installed: same architecture with seeded random weights"
    spec = demo_spec.factory()
    # The scale factor is measured from the trained encoder; a placeholder 0 would divide by zero.
    scale = float(spec.model.get("latent_scale_factor") or 1.0)
    spec.model["latent_scale_factor"] = scale
    spec.components.pop("encoder", None)  # txt2img only: the encoder is not part of the comparison
    return BenchModel("demo", spec, spec.components["denoiser"].module, spec.components["decoder"].module,
                      dict(spec.sampler["config"]), scale, int(spec.model["vae_downsample"]), note)


MODELS = {"demo": demo_model, "sd": sd_model}


def bundle_for(bm: BenchModel, *, formats: tuple[str, ...] | None = None,
               precisions: tuple[str, ...] = ("fp32", "int8-static"), cache: str | None = None,
               log=print) -> Any:
    """The model converted by ``edge_sdk.convert`` (cached by config and weights); artifacts that fail
    validation are left out (keep_going) and listed by the log."""
    import os
    from pathlib import Path

    import torch

    import edge_sdk
    from edge_sdk.bundle import Bundle
    from edge_sdk.cache import cache_dir
    from edge_sdk.converters.convert import ConvertReport
    from edge_sdk.errors import BundleError

    formats = formats or bm.formats
    root = Path(cache or os.environ.get("EDGE_SDK_BENCH_CACHE") or cache_dir("bench"))
    path = root / f"{bm.name}-{edge_sdk.__version__}-{'_'.join(formats)}-{'_'.join(precisions)}-{bm.key()}"
    if path.exists():
        try:
            return Bundle.open(path)
        except BundleError:
            pass
    root.mkdir(parents=True, exist_ok=True)
    rep = ConvertReport(None)
    # One torch thread: on a shared 2-core machine two spinning OpenMP threads were measured 15x
    # slower than one (RESULTS.md), and export + calibration is torch-bound.
    torch.set_num_threads(1)
    log(f"converting {bm.name} to {', '.join(formats)} x {', '.join(precisions)} (once; cached in {path})")
    # An explicit validation bar, recorded in the manifest: the benchmarks measure int8 quality on the
    # final image (PSNR vs fp32), so an int8 artifact is kept even when its per-call error is over
    # the default int8 bar (seeded random weights quantize worse than trained ones).
    b = edge_sdk.convert(bm.spec, path, formats=list(formats), precisions=list(precisions), keep_going=True,
                         overwrite=True, report=rep, tolerance=BENCH_TOLERANCE)
    for f in rep.failures:
        log(f"  not in the bundle: {f.label()}: {f.error.message[:160]}")
    return b
