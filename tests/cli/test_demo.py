"""`edge-sdk demo` from the shipped weights: a grid of every class, and the quality figure holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edge_sdk.converters import demo


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("edge-sdk-cache")


@pytest.mark.slow
def test_demo_command_writes_a_grid_and_reuses_its_cache(cli, demo_cache, tmp_path):
    env = {"EDGE_SDK_CACHE": str(demo_cache)}
    out = tmp_path / "demo.png"
    r = cli("demo", "--board", "x86-64-generic", "--out", str(out), "--json", env=env)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["board"] == "x86-64-generic"
    assert report["convert_seconds"] > 0  # first run converts
    assert set(report["plan"]) == {"denoiser", "decoder", "encoder"}
    assert report["steps"] == demo.DEFAULT_NUM_STEPS and report["sampler"] == "dpmpp_2m"
    assert report["images"] == 2 * demo.NUM_CLASSES
    assert report["class_labels"][: demo.NUM_CLASSES] == list(range(demo.NUM_CLASSES))
    assert report["peak_rss_mb"] > 0 and report["timings_s"]["denoise"] > 0
    img = cv2.imread(str(out))
    pad = 2  # edge_sdk.pipelines.result.grid
    assert img.shape == (2 * (32 + pad) + pad, 10 * (32 + pad) + pad, 3)

    again = tmp_path / "again.png"
    r = cli("demo", "--board", "x86-64-generic", "--out", str(again), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["convert_seconds"] == 0  # from the cache
    assert np.array_equal(cv2.imread(str(again)), img)  # same seed, same grid

    r = cli("demo", "--board", "x86-64-generic", "--out", str(tmp_path / "t.png"), env=env)
    assert r.returncode == 0 and "peak RSS" in r.stdout and "denoiser" in r.stdout


@pytest.mark.slow
def test_generated_digits_are_recognised_as_their_class(demo_cache, monkeypatch):
    """The model card's quality figure, rerun through edge-sdk's own pipeline on ONNX Runtime."""
    import edge_sdk
    from edge_sdk.demo import demo_bundle

    monkeypatch.setenv("EDGE_SDK_CACHE", str(demo_cache))
    bundle, _ = demo_bundle()
    per_class = 20
    labels = np.repeat(np.arange(demo.NUM_CLASSES), per_class)
    with edge_sdk.load(bundle, runtime="onnxruntime") as gen:
        res = gen.generate(steps=8, sampler="dpmpp_2m", seed=1234, class_labels=labels.tolist(),
                           guidance=demo.DEFAULT_GUIDANCE_SCALE)
    classifier = demo.load_demo_modules()["classifier"]
    with torch.no_grad():
        pred = classifier(torch.from_numpy(res.raw)).argmax(1).numpy()
    accuracy = float((pred == labels).mean())
    # The bar: generated samples are classified as the class asked for >= 90% of the time.
    assert accuracy >= 0.9, accuracy


@pytest.mark.slow
def test_watch_folder_app_serves_requests_and_survives_a_bad_one(demo_cache, monkeypatch, tmp_path):
    """examples/watch_folder_app.py, the embedding example, on the demo bundle for a Pi Zero 2 W."""
    from edge_sdk.demo import demo_bundle

    monkeypatch.setenv("EDGE_SDK_CACHE", str(demo_cache))
    bundle, _ = demo_bundle()
    app = Path(__file__).resolve().parents[2] / "examples" / "watch_folder_app.py"
    assert len(app.read_text().splitlines()) < 30  # the "under 30 lines"
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    (inbox / "seven.json").write_text(json.dumps({"class": 7, "seed": 3, "steps": 4}))
    (inbox / "bad.json").write_text(json.dumps({"class": 7, "steps": 0}))  # 0 steps: refused, app goes on
    r = subprocess.run([sys.executable, str(app), str(bundle.root), str(inbox), str(outbox), "rpi-zero-2w", "--once"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    img = cv2.imread(str(outbox / "seven.png"))
    assert img.shape == (32, 32, 3) and img.std() > 10  # a drawn digit, not a flat image
    assert "steps" in (outbox / "bad.error.txt").read_text()
    assert list(inbox.iterdir()) == []  # both requests consumed
