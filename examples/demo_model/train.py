"""Train edge-sdk's demo model: a class-conditional latent diffusion model of coloured digits.

Reproducible and self-contained: the data set is scikit-learn's bundled 8x8 digits, upscaled to
32x32 and tinted with a seeded random colour per sample (no download). Steps:

1. a tiny VAE (downsample factor 4, 4 latent channels) learns to reconstruct the images;
2. the latent scaling factor (1 / std of the latents) is measured;
3. a class-conditional latent denoiser learns epsilon on the scaled latents, with the class
   label replaced by the null class 12% of the time so classifier-free guidance works;
4. a small classifier learns the real images (held-out accuracy reported);
5. 20 images per class are generated (DPM-Solver++ 2M, 8 steps, guidance 4) and classified.

Writes converters/demo/weights/*.safetensors, converters/demo/MODEL_CARD.md and
examples/demo_model/samples.png (each written to a temporary name and renamed into place).

    python examples/demo_model/train.py    # ~10 min of CPU time, one thread
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: spinning worker threads on a CPU shared with other jobs made a VAE
# step 8x slower (2.0 s instead of 0.26 s, measured), passive waiting avoids that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from edge_sdk.converters import demo
from edge_sdk.converters.demo.model import count_parameters
from edge_sdk.converters.demo.reference_sampling import class_accuracy, generate_images

REPO = Path(__file__).resolve().parents[2]
SAMPLES_PNG = Path(__file__).resolve().parent / "samples.png"
CFG_DROPOUT = 0.12
LATENT_NOISE = 0.1  # fixed posterior std of the VAE: the decoder learns to tolerate sloppy latents
LATENT_PENALTY = 1e-3  # keeps the encoder from inflating latents to drown that noise
EMA_DECAY = 0.999


# ----------------------------------------------------------------------------------------- data
def digit_masks(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn digits as 32x32 intensity masks in [0, 1]: (train, train labels, test, test
    labels), a seeded 80/20 split."""
    import cv2
    from sklearn.datasets import load_digits

    digits = load_digits()
    masks = np.stack(
        [cv2.resize(img / 16.0, (28, 28), interpolation=cv2.INTER_CUBIC) for img in digits.images]
    )
    masks = np.pad(np.clip(masks, 0.0, 1.0), ((0, 0), (2, 2), (2, 2))).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(masks))
    n_test = len(masks) // 5
    test, train = order[:n_test], order[n_test:]
    to_t = torch.from_numpy
    return (
        to_t(masks[train]),
        to_t(digits.target[train]).long(),
        to_t(masks[test]),
        to_t(digits.target[test]).long(),
    )


def tint(masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """B x 32 x 32 masks -> B x 3 x 32 x 32 images in [-1, 1]: a random bright colour on black."""
    colour = torch.rand((masks.shape[0], 3), generator=generator)
    colour = colour / colour.amax(dim=1, keepdim=True)  # brightest channel at full intensity
    return masks[:, None] * colour[:, :, None, None] * 2.0 - 1.0


def shift(images: torch.Tensor, generator: torch.Generator, max_px: int = 2) -> torch.Tensor:
    """Random translation by up to max_px (the borders are background, so rolling is safe)."""
    dx, dy = (int(v) for v in torch.randint(-max_px, max_px + 1, (2,), generator=generator))
    return torch.roll(images, shifts=(dy, dx), dims=(2, 3))


# ------------------------------------------------------------------------------------- training
def cosine_lr(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def run_steps(
    name: str,
    params: list[torch.nn.Parameter],
    steps: int,
    lr: float,
    loss_fn: Callable[[int], torch.Tensor],
    after_step: Callable[[], None] | None = None,
) -> float:
    """Adam with warmup + cosine decay; returns the mean loss of the last 100 steps."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    recent: list[float] = []
    start = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, lr)
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if after_step is not None:
            after_step()
        recent = (recent + [loss.item()])[-100:]
        if (step + 1) % max(1, steps // 10) == 0:
            print(
                f"  {name} step {step + 1}/{steps} loss {np.mean(recent):.5f} "
                f"({time.perf_counter() - start:.0f}s)",
                flush=True,
            )
    return float(np.mean(recent))


def train_vae(
    modules: dict, masks: torch.Tensor, steps: int, batch: int, gen: torch.Generator
) -> float:
    enc, dec = modules["vae_encoder"], modules["vae_decoder"]

    def loss_fn(_: int) -> torch.Tensor:
        idx = torch.randint(0, masks.shape[0], (batch,), generator=gen)
        images = tint(masks[idx], gen)
        z = enc(images)
        recon = dec(z + LATENT_NOISE * torch.randn(z.shape, generator=gen))
        return F.l1_loss(recon, images) + F.mse_loss(recon, images) + LATENT_PENALTY * z.square().mean()

    return run_steps("vae", [*enc.parameters(), *dec.parameters()], steps, 2e-3, loss_fn)


@torch.no_grad()
def encode_dataset(
    enc: torch.nn.Module, masks: torch.Tensor, copies: int, gen: torch.Generator
) -> torch.Tensor:
    """Latents of `copies` differently tinted versions of every training mask."""
    out = [enc(tint(masks, gen)) for _ in range(copies)]
    return torch.cat(out)


def train_denoiser(
    modules: dict,
    latents: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    batch: int,
    gen: torch.Generator,
) -> tuple[float, torch.nn.Module]:
    """Epsilon-prediction DDPM loss with CFG label dropout; returns (loss, EMA copy)."""
    from diffusers import DDPMScheduler

    den = modules["denoiser"]
    ema = copy.deepcopy(den).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    sched = DDPMScheduler(**demo.SCHEDULER_CONFIG)
    alphas_cumprod = sched.alphas_cumprod.to(torch.float32)
    n_train = demo.SCHEDULER_CONFIG["num_train_timesteps"]

    def loss_fn(_: int) -> torch.Tensor:
        idx = torch.randint(0, latents.shape[0], (batch,), generator=gen)
        x0, y = latents[idx], labels[idx].clone()
        y[torch.rand(batch, generator=gen) < CFG_DROPOUT] = demo.NULL_CLASS
        t = torch.randint(0, n_train, (batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = alphas_cumprod[t][:, None, None, None]
        noisy = a.sqrt() * x0 + (1.0 - a).sqrt() * noise
        return F.mse_loss(den(noisy, t.to(torch.float32), y), noise)

    @torch.no_grad()
    def update_ema() -> None:
        for p_ema, p in zip(ema.parameters(), den.parameters(), strict=False):
            p_ema.lerp_(p, 1.0 - EMA_DECAY)

    loss = run_steps("denoiser", list(den.parameters()), steps, 1e-3, loss_fn, update_ema)
    return loss, ema


def train_classifier(
    modules: dict, masks: torch.Tensor, labels: torch.Tensor, steps: int, batch: int, gen: torch.Generator
) -> float:
    clf = modules["classifier"]

    def loss_fn(_: int) -> torch.Tensor:
        idx = torch.randint(0, masks.shape[0], (batch,), generator=gen)
        return F.cross_entropy(clf(shift(tint(masks[idx], gen), gen)), labels[idx])

    return run_steps("classifier", list(clf.parameters()), steps, 2e-3, loss_fn)


# -------------------------------------------------------------------------------------- outputs
def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(module: torch.nn.Module, path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save

    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata=metadata))


def grid_png(images: torch.Tensor, rows: int, scale: int = 2) -> bytes:
    """Images in [-1, 1] (class-major) -> PNG bytes of a rows x (B / rows) grid, 1 px gaps."""
    import cv2

    arr = ((images.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    b, h, w, _ = arr.shape
    cols = b // rows
    canvas = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1, 3), 64, np.uint8)
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = arr[i]
    canvas = np.repeat(np.repeat(canvas, scale, axis=0), scale, axis=1)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def model_card(fig: dict) -> str:
    p = fig["params"]
    return f"""# edge-sdk demo model: class-conditional latent diffusion of coloured digits

Generated by `examples/demo_model/train.py` (seed {fig['seed']}); rerun it to reproduce the weights.

## Data
scikit-learn's bundled digits (1797 images, 8x8, 10 classes; no download), upscaled to 28x28
(bicubic), padded to 32x32, and tinted per sample with a random bright RGB colour on black
(brightest channel at full intensity), as images in [-1, 1]. Seeded 80/20 split: {fig['n_train']}
training images, {fig['n_test']} held out (the classifier's test set).

## Architecture (`converters/demo/model.py`, fully convolutional)
| module | file | parameters | what |
|---|---|---:|---|
| VAE encoder | `weights/vae_encoder.safetensors` | {p['vae_encoder']:,} | image 3xHxW in [-1, 1] -> latent mean 4 x H/4 x W/4 |
| VAE decoder | `weights/vae_decoder.safetensors` | {p['vae_decoder']:,} | latent -> image in [-1, 1] (tanh) |
| denoiser | `weights/denoiser.safetensors` | {p['denoiser']:,} | (latent, timestep float32 [B], class int64 [B]) -> epsilon |
| classifier | `weights/classifier.safetensors` | {p['classifier']:,} | image -> 10 logits (quality metric only) |

Conv / GroupNorm(8) / SiLU residual blocks, stride-2 conv down, nearest x2 + conv up; the denoiser
is a two-level UNet on the latent with a sin/cos timestep embedding plus a class embedding of 11
rows (10 digits + null class 10 for classifier-free guidance) added per channel. Any image size
that is a multiple of 8 works (latent a multiple of 2). Weights are float32 safetensors,
{fig['weights_bytes'] / 1e6:.2f} MB in all.

Latent scaling factor (1 / std of the training latents, rounded to 4 decimals):
**{fig['scaling_factor']}**; the denoiser sees `latent * scaling_factor`, the decoder gets
`latent / scaling_factor`.

## Training ({fig['device']}, {fig['threads']} thread(s))
| stage | steps x batch | final loss | wall time |
|---|---|---:|---:|
| VAE (L1 + MSE, latent noise std {LATENT_NOISE}, latent L2 {LATENT_PENALTY}) | {fig['vae_steps']} x {fig['vae_batch']} | {fig['vae_loss']:.4f} | {fig['vae_time']:.0f} s |
| denoiser (epsilon MSE, CFG dropout {CFG_DROPOUT:.0%}, EMA {EMA_DECAY}) | {fig['den_steps']} x {fig['den_batch']} | {fig['den_loss']:.4f} | {fig['den_time']:.0f} s |
| classifier (cross-entropy, +-2 px shifts) | {fig['clf_steps']} x {fig['clf_batch']} | {fig['clf_loss']:.4f} | {fig['clf_time']:.0f} s |

AdamW, warmup 100 steps then cosine decay, gradient clip 1.0. Total training time
**{fig['total_time'] / 60:.1f} min** wall ({fig['total_cpu'] / 60:.1f} min of CPU time) on
{fig['threads']} cores of a {fig['cpu']} that other jobs were sharing at the time.

Noise schedule (diffusers keys, `SCHEDULER_CONFIG` in `converters/demo/__init__.py`):
`{demo.SCHEDULER_CONFIG}`.

## Quality
- VAE reconstruction on the held-out images: PSNR **{fig['vae_psnr']:.1f} dB**.
- Classifier accuracy on the held-out real images: **{fig['clf_test_acc']:.1%}**.
- **Generation accuracy: {fig['gen_acc']:.1%}** of {fig['gen_n']} generated images
  ({fig['gen_n'] // demo.NUM_CLASSES} per class, 32x32) are classified as the class they were
  asked for. Sampler: diffusers `DPMSolverMultistepScheduler` (DPM-Solver++ 2M),
  {demo.DEFAULT_NUM_STEPS} steps, classifier-free guidance scale {demo.DEFAULT_GUIDANCE_SCALE},
  noise from `torch.Generator().manual_seed({fig['eval_seed']})`. Without guidance (scale 1.0)
  the same figure is {fig['gen_acc_nocfg']:.1%}. Rechecked by
  `tests/converters/test_demo_model.py` (slow).
- Speed: an 8-step generation of a 10-image grid (CFG batched, decode included) takes
  {fig['grid_ms']:.0f} ms in torch on this CPU.

Samples (one row per class 0-9): `examples/demo_model/samples.png`.

## Limits
A toy: 32x32 digits, learned from {fig['n_train']} images. Larger canvases (any multiple of 8) run, since
every module is fully convolutional, but the model has only seen single centred digits.
"""


# ----------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    # One thread: on the team's 2 shared cores it beat two (0.17 s vs 0.27 s per VAE step).
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vae-steps", type=int, default=600)
    ap.add_argument("--denoiser-steps", type=int, default=3000)
    ap.add_argument("--classifier-steps", type=int, default=400)
    ap.add_argument("--latent-copies", type=int, default=8, help="tints per training image")
    ap.add_argument("--weights-dir", type=Path, default=demo.WEIGHTS_DIR)
    ap.add_argument("--card", type=Path, default=demo.MODEL_CARD)
    ap.add_argument("--samples", type=Path, default=SAMPLES_PNG)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(args.seed)
    fig: dict = {"seed": args.seed, "threads": args.threads, "device": "CPU"}
    fig["cpu"] = _cpu_name()

    train_m, train_y, test_m, test_y = digit_masks(args.seed)
    fig["n_train"], fig["n_test"] = len(train_m), len(test_m)
    modules = demo.build_demo_modules()
    fig["params"] = {k: count_parameters(m) for k, m in modules.items()}
    print("parameters:", fig["params"], flush=True)
    t_all, cpu_all = time.perf_counter(), time.process_time()

    t0 = time.perf_counter()
    fig["vae_steps"], fig["vae_batch"] = args.vae_steps, 64
    fig["vae_loss"] = train_vae(modules, train_m, args.vae_steps, 64, gen)
    fig["vae_time"] = time.perf_counter() - t0
    enc, dec = modules["vae_encoder"].eval(), modules["vae_decoder"].eval()
    with torch.no_grad():
        test_images = tint(test_m, torch.Generator().manual_seed(args.seed + 1))
        mse = F.mse_loss(dec(enc(test_images)), test_images).item()
    fig["vae_psnr"] = 10 * math.log10(4.0 / mse)  # peak-to-peak range of [-1, 1] is 2

    t0 = time.perf_counter()
    latents = encode_dataset(enc, train_m, args.latent_copies, gen)
    scaling = round(1.0 / float(latents.std()), 4)
    fig["scaling_factor"] = scaling
    print(f"latent std {float(latents.std()):.4f} -> scaling factor {scaling}", flush=True)
    latent_labels = train_y.repeat(args.latent_copies)
    fig["den_steps"], fig["den_batch"] = args.denoiser_steps, 128
    fig["den_loss"], ema = train_denoiser(
        modules, latents * scaling, latent_labels, args.denoiser_steps, 128, gen
    )
    modules["denoiser"] = ema
    fig["den_time"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fig["clf_steps"], fig["clf_batch"] = args.classifier_steps, 128
    fig["clf_loss"] = train_classifier(modules, train_m, train_y, args.classifier_steps, 128, gen)
    fig["clf_time"] = time.perf_counter() - t0
    fig["total_time"] = time.perf_counter() - t_all
    fig["total_cpu"] = time.process_time() - cpu_all
    clf = modules["classifier"].eval()
    with torch.no_grad():
        fig["clf_test_acc"] = float((clf(test_images).argmax(1) == test_y).float().mean())

    fig["eval_seed"] = args.seed
    fig["gen_acc"], images, _ = class_accuracy(modules, scaling, seed=args.seed)
    fig["gen_n"] = images.shape[0]
    fig["gen_acc_nocfg"], _, _ = class_accuracy(modules, scaling, guidance_scale=1.0, seed=args.seed)
    grid_labels = torch.arange(demo.NUM_CLASSES)
    generate_images(modules, grid_labels, scaling)  # warm-up
    t0 = time.perf_counter()
    generate_images(modules, grid_labels, scaling)
    fig["grid_ms"] = (time.perf_counter() - t0) * 1000
    print(
        f"VAE PSNR {fig['vae_psnr']:.1f} dB, classifier test acc {fig['clf_test_acc']:.3f}, "
        f"generation acc {fig['gen_acc']:.3f} (no CFG {fig['gen_acc_nocfg']:.3f}), "
        f"grid {fig['grid_ms']:.0f} ms, training {fig['total_time']:.0f} s",
        flush=True,
    )

    meta = {"scaling_factor": str(scaling), "seed": str(args.seed)}
    for name, module in modules.items():
        save_weights(module, args.weights_dir / f"{name}.safetensors", meta)
    fig["weights_bytes"] = sum((args.weights_dir / f"{n}.safetensors").stat().st_size for n in modules)
    atomic_write_bytes(args.samples, grid_png(images[:: 2], rows=demo.NUM_CLASSES))
    atomic_write_bytes(args.card, model_card(fig).encode())
    print(f"wrote {args.weights_dir}, {args.card}, {args.samples}")
    if scaling != demo.SCALING_FACTOR:
        print(
            f"NOTE: SCALING_FACTOR in converters/demo/__init__.py is {demo.SCALING_FACTOR}; "
            f"set it to {scaling} to match these weights.",
            file=sys.stderr,
        )
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    raise SystemExit(main())
