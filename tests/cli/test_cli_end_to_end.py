"""The real console script, end to end: convert -> info -> run, and the errors a user can hit."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest


@pytest.mark.slow
def test_convert_info_run(cli, tiny_factory, tmp_path):
    bundle = tmp_path / "t.bundle"
    r = cli("convert", tiny_factory, "-o", str(bundle), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["artifacts"][0]["component"] == "denoiser"
    assert float(report["artifacts"][0]["rel_l2"]) < 1e-4

    r = cli("info", str(bundle))
    assert r.returncode == 0, r.stderr
    assert "denoiser" in r.stdout and "[batch, 3, height, width]" in r.stdout and "onnxruntime" in r.stdout

    out = tmp_path / "img.png"
    r = cli("run", str(bundle), "--steps", "4", "--seed", "7", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["steps"] == 4 and summary["seed"] == 7 and summary["plan"]["denoiser"] == "onnxruntime:onnx/fp32"
    img = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8

    # Same seed, same image; another seed, another image.
    out2, out3 = tmp_path / "again.png", tmp_path / "other.png"
    assert cli("run", str(bundle), "--steps", "4", "--seed", "7", "--out", str(out2), "-q").returncode == 0
    assert cli("run", str(bundle), "--steps", "4", "--seed", "8", "--out", str(out3), "-q").returncode == 0
    assert np.array_equal(cv2.imread(str(out2)), img)
    assert not np.array_equal(cv2.imread(str(out3)), img)


def _one_clear_line(r, code: int, fragment: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert fragment in r.stderr, r.stderr


def test_missing_bundle(cli, tmp_path):
    _one_clear_line(cli("run", str(tmp_path / "nope.bundle")), 3, "bundle not found")


@pytest.mark.slow
def test_bad_entry_point(cli, tmp_path):
    _one_clear_line(cli("convert", "no_such_module_xyz:factory", "-o", str(tmp_path / "b")), 4,
                    "cannot import 'no_such_module_xyz'")
    _one_clear_line(cli("convert", "not-an-entry-point", "-o", str(tmp_path / "b")), 4,
                    "cannot tell what kind of model source")


def test_unknown_option_and_bad_size(cli, tiny_bundle):
    r = cli("run", str(tiny_bundle), "--no-such-option")
    assert r.returncode == 2 and "No such option" in r.stderr and "Traceback" not in r.stderr
    _one_clear_line(cli("run", str(tiny_bundle), "--size", "big"), 2, "is not WIDTHxHEIGHT")


def test_unknown_sampler_lists_known_ones(cli, tiny_bundle, tmp_path):
    _one_clear_line(cli("run", str(tiny_bundle), "--sampler", "nope", "--out", str(tmp_path / "x.png")), 2,
                    "unknown sampler 'nope'")


def test_shape_mismatch_is_an_input_error(tiny_bundle):
    import pytest

    from edge_sdk.bundle import Bundle
    from edge_sdk.errors import InputError
    from edge_sdk.runtimes.registry import open_artifact

    art = Bundle.open(tiny_bundle).artifact("denoiser", "onnx", "fp32")
    with open_artifact(art.path, "onnxruntime") as rt:
        with pytest.raises(InputError, match=r"input 'sample' has shape \(1, 4, 32, 32\).*axis 1 must be 3"):
            rt.run({"sample": np.zeros((1, 4, 32, 32), np.float32), "timestep": np.zeros(1, np.float32)})
        with pytest.raises(InputError, match="has dtype float64"):
            rt.run({"sample": np.zeros((1, 3, 32, 32)), "timestep": np.zeros(1, np.float32)})
