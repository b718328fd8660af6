"""The front door: ``edge_sdk.load(bundle, board=...)`` plans for the board and enforces its cap;
``GenerateRequest`` carries a run's parameters and is validated once."""

from __future__ import annotations

import os

import numpy as np
import pytest

import edge_sdk
from edge_sdk.errors import MemoryCapError, PlanError, UsageError
from edge_sdk.measure.memory import rss_bytes
from edge_sdk.pipelines.request import GenerateRequest
from edge_sdk.planning.board import load_board

BOARD = "x86-64-generic"  # the fallback profile: its runtimes (onnxruntime:cpu first) are installed here


@pytest.fixture
def probe_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_SDK_CACHE", str(tmp_path / "cache"))  # the planner's memory probes land here


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, "steps must be a positive integer"),
    ({"steps": True}, "steps must be a positive integer"),
    ({"guidance_rescale": 1.5}, r"guidance rescale must be in \[0, 1\]"),
    ({"batch": 0}, "batch must be a positive integer"),
    ({"strength": 0.5}, "strength applies to img2img only"),
    ({"prompt": "a\x00cat"}, "NUL"),
])
def test_a_request_is_validated_when_it_is_made(kwargs, match):
    with pytest.raises(UsageError, match=match):
        GenerateRequest(**kwargs)


def test_a_request_or_keywords_not_both_and_no_unknown_keywords():
    req = GenerateRequest(steps=3)
    assert GenerateRequest.of(req) is req and GenerateRequest.of(steps=3) == req
    with pytest.raises(UsageError, match="not both"):
        GenerateRequest.of(req, seed=4)
    with pytest.raises(UsageError, match="unknown generate option"):
        GenerateRequest.of(stpes=3)
    assert GenerateRequest(class_labels=[1, 2, 3]).images() == 3 and GenerateRequest(batch=2).images() == 2


@pytest.mark.slow  # sessions plus three runs: about 1 s here
def test_a_request_gives_the_same_image_as_keywords(tiny_bundle):
    with edge_sdk.load(tiny_bundle) as g:
        by_kwargs = g.generate(steps=3, seed=5, sampler="euler")
        by_request = g.generate(GenerateRequest(steps=3, seed=5, sampler="euler"))
        by_pipeline = g.pipeline.generate(steps=3, seed=5, sampler="euler")  # the pipeline's own signature
    # One deterministic ONNX Runtime CPU session, same seed and inputs: bit-identical.
    assert np.array_equal(by_kwargs.raw, by_request.raw) and np.array_equal(by_kwargs.raw, by_pipeline.raw)


@pytest.mark.slow  # the planner probes the denoiser's memory once (~4 s)
def test_load_with_a_board_plans_for_it_and_enforces_its_cap(tiny_bundle, probe_cache):
    with edge_sdk.load(tiny_bundle, board=BOARD, threads=1, device="cpu") as g:
        assert g.plan.board == BOARD and g.plan.memory_cap_bytes == load_board(BOARD).cap_bytes
        # --threads and --device narrow the board's plan instead of being dropped.
        assert {(c.runtime, c.device, c.threads) for c in g.plan.components.values()} == {("onnxruntime", "cpu", 1)}
        assert g.generate(steps=2).images.shape == (1, 32, 32, 3)
        # The watch is the Generator's own: no MemoryWatch around this call, yet a cap below what the
        # process already holds stops the run.
        g.plan.memory_cap_bytes = rss_bytes() // 2
        with pytest.raises(MemoryCapError, match=r"over its cap of \d+ MB"):
            g.generate(steps=4)
    with pytest.raises(PlanError, match=f"board {BOARD} offers no runtime on device NPU"):
        edge_sdk.load(tiny_bundle, board=BOARD, device="NPU")
    with pytest.raises(UsageError, match="format cannot be forced on a board plan"):
        edge_sdk.load(tiny_bundle, board=BOARD, format="onnx")


@pytest.mark.slow  # a child process loads and plans (~5 s)
def test_isolate_with_a_board_plans_in_the_child(tiny_bundle, probe_cache):
    with edge_sdk.load(tiny_bundle, board=BOARD, isolate=True, threads=1) as g:
        assert g.pid is not None and g.pid != os.getpid()
        assert g.plan.board == BOARD and all(c.threads == 1 for c in g.plan.components.values())
        with edge_sdk.load(tiny_bundle, runtime="onnxruntime") as here:
            want = here.generate(steps=2, seed=1).raw
        # Same plan choice (onnxruntime CPU, fp32) in another process: bit-identical.
        assert np.array_equal(g.generate(GenerateRequest(steps=2, seed=1)).raw, want)


@pytest.mark.slow  # one console-script run (~3 s)
def test_run_with_a_board_refuses_a_device_the_board_does_not_offer(cli, tiny_bundle, tmp_path):
    r = cli("run", str(tiny_bundle), "--board", BOARD, "--device", "NPU", "--out", str(tmp_path / "o.png"))
    # Before, --device was dropped silently with --board; now it narrows the board's list, here to nothing.
    assert r.returncode == 7 and f"board {BOARD} offers no runtime on device NPU" in r.stderr, r.stderr
    assert "onnxruntime:cpu" in r.stderr and not (tmp_path / "o.png").exists()


def test_one_native_size_when_the_bundle_records_none(tiny_bundle_copy):
    import json

    from edge_sdk.bundle import DEFAULT_SAMPLE_CELLS, Bundle
    from edge_sdk.planning.planner import PlanRequest, plan

    path = tiny_bundle_copy / "manifest.json"
    doc = json.loads(path.read_text())
    del doc["model"]["sample_size"]  # a hand-written bundle; its denoiser takes any size
    path.write_text(json.dumps(doc))
    b = Bundle.open(tiny_bundle_copy, verify=False)
    assert b.native_cells() == (DEFAULT_SAMPLE_CELLS, DEFAULT_SAMPLE_CELLS)
    # The planner estimated for 64 cells while the pipeline ran 32: now both take the bundle's answer.
    p = plan(b, BOARD, PlanRequest(measure=False))
    assert p.size == (DEFAULT_SAMPLE_CELLS, DEFAULT_SAMPLE_CELLS)
    with edge_sdk.load(b, plan=p) as g:
        assert g.pipeline.sample_shape(1, None, None)[2:] == p.size


def test_one_cache_folder_and_the_old_variable_still_works(monkeypatch, tmp_path):
    from edge_sdk.cache import cache_dir

    monkeypatch.delenv("EDGE_SDK_CACHE", raising=False)
    monkeypatch.setenv("EDGE_SDK_CACHE_DIR", str(tmp_path / "old"))
    assert cache_dir("memory") == tmp_path / "old" / "memory"
    monkeypatch.setenv("EDGE_SDK_CACHE", str(tmp_path / "new"))  # the one variable wins
    assert cache_dir("openvino") == tmp_path / "new" / "openvino"
    monkeypatch.delenv("EDGE_SDK_CACHE")
    monkeypatch.delenv("EDGE_SDK_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "edge-sdk"
