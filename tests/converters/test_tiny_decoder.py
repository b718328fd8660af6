"""A tiny autoencoder (TAESD) carried as the decoder's ``tiny`` variant, and the planner's choice.

The shared convert of the SD-style test folder (conftest ``lora_taesd``): its decoder an
AutoencoderKL with SD's 8 px per latent cell (``--vae``), plus ``--tiny-vae`` an AutoencoderTiny,
both written by diffusers' own classes with ``save_pretrained``. Checked: the manifest records the
variant; the tiny artifact decodes what the pipeline feeds the full one (latent / scaling_factor)
to what diffusers' AutoencoderTiny makes of the sampler's latents; a board whose cap the full VAE
only meets in tiles gets the tiny decoder, a big board the full one; and both plans generate, each
image equal to the reference decoder's output on the run's own final latents.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edge_sdk.errors import ModelSourceError, UsageError

SIZE = 256  # pixels: 32x32 latent cells, where the full decoder's activations dominate the default model


@pytest.fixture(scope="module")
def taesd_bundle(lora_taesd, tmp_path_factory):
    """(bundle, AutoencoderKL folder, TAESD folder, a folder for board files)."""
    b, _, taesd, kl8 = lora_taesd
    return b, kl8, taesd, tmp_path_factory.mktemp("boards")


@pytest.mark.slow
def test_tiny_decoder_is_recorded_and_decodes_like_diffusers(taesd_bundle):
    import onnxruntime as ort
    from diffusers import AutoencoderTiny

    b, _, taesd, _ = taesd_bundle
    arts = {a.variant: a for a in b.artifacts("decoder")}
    assert set(arts) == {"", "tiny"}
    rec = b.component("decoder")["config"]["variants"]["tiny"]
    ref = AutoencoderTiny.from_pretrained(str(taesd)).eval()
    assert rec == {"class": "AutoencoderTiny", "source": "taesd", "attention": False,
                   "parameters": sum(p.numel() for p in ref.decoder.parameters())}
    assert arts["tiny"].validation["rel_l2"] < 1e-4  # fp32 export bar, as for every fp32 artifact
    assert arts["tiny"].size < arts[""].size / 5  # the point of it: a much smaller decoder

    # The pipeline feeds every decoder latent / scaling_factor (+ shift); TAESD wants the sampler's
    # latents as they are: the wrapper's conversion must make the two agree.
    lat = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = ref.decode(lat).sample.numpy()
    sess = ort.InferenceSession(str(arts["tiny"].path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"latent": (lat / b.model["latent_scale_factor"]).numpy()})[0]
    # fp32 on both sides; the division and re-multiplication by 0.18215 costs a few ulp only.
    assert float(np.linalg.norm(got - want) / np.linalg.norm(want)) < 1e-5


@pytest.mark.slow
def test_small_board_plans_the_tiny_decoder_big_board_the_full_vae_and_both_generate(taesd_bundle, arch):
    from diffusers import AutoencoderKL, AutoencoderTiny

    from edge_sdk import api
    from edge_sdk.pipelines.result import to_uint8
    from edge_sdk.planning.planner import PlanRequest, plan

    b, kl8, taesd, tmp = taesd_bundle
    # Role-default memory model (measure=False): deterministic, and probing three artifacts would
    # take ~40 s here. The cap of the small board sits halfway between the two decoders' peaks.
    req = dict(height=SIZE, width=SIZE, measure=False)
    full_peak = plan(b, "jetson-agx-orin-64gb", PlanRequest(**req, decoder="full")).estimates["peak"]
    tiny_peak = plan(b, "jetson-agx-orin-64gb", PlanRequest(**req, decoder="tiny")).estimates["peak"]
    assert tiny_peak < full_peak
    cap_mb = int((full_peak + tiny_peak) / 2 / 0.95 / 2**20)
    small = arch.board_with_cap(tmp, "small-board", cap_mb)

    p_small = plan(b, str(small), PlanRequest(**req))
    p_big = plan(b, "jetson-agx-orin-64gb", PlanRequest(**req))
    assert p_small.components["decoder"].variant == "tiny" and p_small.decode_tiling is None
    assert any("tiny (TAESD) variant" in n for n in p_small.notes)
    assert p_big.components["decoder"].variant == "" and p_big.decode_tiling is None
    # Forcing the full VAE on the small board costs sequential CFG (its tiles small enough to fit,
    # under planner.CLEAR_TILE, would cost the image): why the tiny one was preferred.
    forced = plan(b, str(small), PlanRequest(**req, decoder="full"))
    assert forced.components["decoder"].variant == "" and forced.cfg == "sequential", forced.rung
    assert any("tiny (TAESD) variant, since the full VAE would need sequential CFG" in n for n in p_small.notes)
    assert p_small.estimates["peak"] <= p_small.memory_cap_bytes * 0.95
    # The same choice through `edge-sdk plan` (in-process), and --decoder full forcing the VAE.
    from click.testing import CliRunner

    from edge_sdk.cli.main import cli as edge_cli

    def cli_plan(*extra):
        r = CliRunner().invoke(edge_cli, ["plan", str(b.root), "--board", str(small), "--size", f"{SIZE}x{SIZE}",
                                          "--no-measure", "--json", *extra])
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    assert cli_plan()["components"]["decoder"]["variant"] == "tiny"
    forced_cli = cli_plan("--decoder", "full")
    assert forced_cli["components"]["decoder"]["variant"] == "" and forced_cli["cfg"] == "sequential"

    vaes = {"tiny": AutoencoderTiny.from_pretrained(str(taesd)).eval(),
            "": AutoencoderKL.from_pretrained(str(kl8)).eval()}
    for board, variant in ((str(small), "tiny"), ("jetson-agx-orin-64gb", "")):
        final: list[np.ndarray] = []
        p = plan(b, board, PlanRequest(**req, installed_only=True))  # runtimes here, as `run --board` does
        assert p.components["decoder"].variant == variant
        with api.load(b, plan=p) as g:
            # The plan carries the small board's cap, which the load enforces; this test runner's
            # own RSS holds every earlier test's models, so here the watch would measure them.
            g.watch = False
            res = g.generate(prompt="a cat", steps=2, seed=0, height=SIZE, width=SIZE,
                             callback=lambda info, keep=final: keep.append(info.sample.copy()) or True)
        img = np.asarray(res.images)
        assert img.shape == (1, SIZE, SIZE, 3) and img.dtype == np.uint8
        vae = vaes[variant]
        with torch.no_grad():
            ref = vae.decode(torch.from_numpy(final[-1]) / vae.config.scaling_factor).sample.numpy()
        diff = np.abs(img.astype(int) - to_uint8(ref).astype(int))
        # fp32 ONNX vs PyTorch: values a few ulp apart can round to neighbouring levels, no more.
        assert diff.max() <= 1 and diff.mean() < 0.05, (variant, diff.max(), diff.mean())


def test_bad_tiny_vae_folders_are_clear_errors(diffusers_folder, tmp_path, arch):
    from diffusers import AutoencoderKL

    from edge_sdk.converters.sources import load_source

    taesd = arch.make_taesd(tmp_path / "taesd")
    # The shared test folder's VAE makes 2 px per latent cell; TAESD 8: not interchangeable.
    with pytest.raises(ModelSourceError, match=r"decodes to 3 channels at 8 px per latent cell, the model's VAE "
                                               r"to 3 at 2"):
        load_source(diffusers_folder, tiny_vae=taesd)
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4).save_pretrained(str(tmp_path / "kl"))
    with pytest.raises(ModelSourceError, match="not an AutoencoderTiny .* use --vae"):
        load_source(diffusers_folder, tiny_vae=tmp_path / "kl")
    with pytest.raises(ModelSourceError, match="no config.json"):
        load_source(diffusers_folder, tiny_vae=tmp_path)
    with pytest.raises(UsageError, match="--tiny-vae applies to diffusers folders only"):
        load_source("examples.tiny:make", tiny_vae=taesd)


def test_planner_refuses_tiny_decoder_a_bundle_lacks(tiny_bundle):
    from edge_sdk.bundle import Bundle
    from edge_sdk.planning.planner import PlanRequest, plan

    b = Bundle.open(tiny_bundle)  # the session's shared pixel-space bundle: no decoder at all
    with pytest.raises(UsageError, match="has no tiny decoder"):
        plan(b, "rpi4-4gb", PlanRequest(decoder="tiny", measure=False))
    with pytest.raises(UsageError, match="unknown decoder choice"):
        plan(b, "rpi4-4gb", PlanRequest(decoder="huge", measure=False))
