"""`edge-sdk run` with the text and img2img options, through the real console script."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import edge_sdk

pytestmark = pytest.mark.slow  # the text model, converted once per session (~30 s of torch.onnx export): the full run


def test_run_with_prompt_and_init_image_matches_the_api(cli, text_bundle, tmp_path):
    bundle, _ = text_bundle
    init = tmp_path / "init.png"
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    cv2.imwrite(str(init), rgb[..., ::-1])
    out = tmp_path / "out.png"
    proc = cli("run", str(bundle.root), "--prompt", "a red cat", "--negative-prompt", "night", "--init-image",
               str(init), "--strength", "0.5", "--steps", "4", "--seed", "3", "--guidance", "2",
               "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["prompt"] == "a red cat" and summary["strength"] == 0.5 and summary["steps_run"] == 2
    with edge_sdk.load(bundle) as g:
        api = g.generate(prompt="a red cat", negative_prompt="night", init_image=init, strength=0.5, steps=4,
                         seed=3, guidance=2.0)
    written = cv2.imread(str(out), cv2.IMREAD_COLOR)[..., ::-1]
    # Same code path, same runtime, same thread count defaults: the PNG holds exactly the API's image.
    np.testing.assert_array_equal(written, api.images[0])


def test_run_prompt_on_a_class_model_is_one_line_usage_error(cli, class_bundle, tmp_path):
    bundle, _ = class_bundle
    proc = cli("run", str(bundle.root), "--prompt", "a cat", "--out", str(tmp_path / "x.png"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: bundle tiny-class is not text-conditioned") and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_run_strength_out_of_range_is_refused_by_the_cli(cli, text_bundle, tmp_path):
    bundle, _ = text_bundle
    proc = cli("run", str(bundle.root), "--prompt", "a", "--strength", "1.5", "--out", str(tmp_path / "x.png"))
    assert proc.returncode == 2 and "--strength" in proc.stderr
