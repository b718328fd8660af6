"""The `remote` runtime against a real MLServer serving the bundle's denoiser: a plan with the
denoiser remote and the text encoder and decoder local gives the all-local image, and the prompt
never reaches the server."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

import edge_sdk
from edge_sdk.bundle import Bundle
from edge_sdk.planning.planner import PlanRequest, plan

PROMPT = "a photo of a red cat sitting on a mat"
# The remote hop carries float32 tensors as JSON numbers, which round-trip float32 exactly, and the
# server runs the same ONNX file on ONNX Runtime's CPU provider: the only difference left is the
# thread count's summation order (~1e-7 per call). 1e-5 relative L2 on the image is the bar.
TOL = 1e-5


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


@pytest.fixture(scope="module")
def local_result(serve_bundle):
    with edge_sdk.load(serve_bundle) as g:
        return g.generate(prompt=PROMPT, seed=7, steps=4)


@pytest.mark.slow
def test_remote_denoiser_matches_local_and_prompt_stays_on_board(serve_bundle, mlserver_denoiser, local_result):
    url, log = mlserver_denoiser
    b = Bundle.open(serve_bundle)
    p = plan(b, "x86-64-generic", PlanRequest(remote={"denoiser": url}, installed_only=True, measure=False))
    assert p.components["denoiser"].runtime == "remote"
    assert p.components["text_encoder"].runtime != "remote" and p.components["decoder"].runtime != "remote"
    # The planner counts the remote denoiser as no local memory, and measured the hop's latency.
    local_plan = plan(b, "x86-64-generic", PlanRequest(installed_only=True, measure=False))
    assert p.estimates["denoise"] < local_plan.estimates["denoise"]
    assert p.components["denoiser"].options["latency_ms"] > 0
    start = log.stat().st_size if log.exists() else 0
    with edge_sdk.load(b, plan=p) as g:
        res = g.generate(prompt=PROMPT, seed=7, steps=4)
        rt = g.pipeline.sessions._open["denoiser"]
        assert rt.name == "remote" and rt.stats["fallbacks"] == 0
        calls = rt.stats["calls"]
    err = rel_l2(res.raw, local_result.raw)
    assert err < TOL, f"remote vs local image rel L2 {err:.2e}"
    received = log.read_text()[start:].splitlines()
    assert len(received) == calls == 4  # one batched CFG call per step (the plan's cfg is batched)
    names = {inp["name"] for line in received for inp in json.loads(line)["inputs"]}
    assert names == {"sample", "timestep", "encoder_hidden_states"}
    text = log.read_text()[start:]
    assert PROMPT not in text
    for word in [w for w in PROMPT.split() if len(w) > 2]:  # whole words ("red" is in "noise_pred")
        assert not re.search(rf"\b{word}\b", text), f"prompt word {word!r} reached the server"


@pytest.mark.slow
def test_remote_falls_back_to_local_artifact_when_unreachable(serve_bundle, local_result):
    import socket

    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    b = Bundle.open(serve_bundle)
    p = plan(b, "x86-64-generic", PlanRequest(remote={"denoiser": dead}, installed_only=True, measure=False))
    assert any("not reachable" in n for n in p.notes)
    assert "latency_ms" not in p.components["denoiser"].options
    t0 = time.perf_counter()
    with edge_sdk.load(b, plan=p) as g:
        res = g.generate(prompt=PROMPT, seed=7, steps=4)
        rt = g.pipeline.sessions._open["denoiser"]
        assert rt.stats["fallbacks"] == 1 and rt.active_device.startswith("local:")
    assert time.perf_counter() - t0 < 30
    # Same file on the same runtime locally: the same image.
    np.testing.assert_array_equal(res.images, local_result.images)


@pytest.mark.slow
def test_remote_runtime_bad_options_are_usage_errors(serve_bundle):
    from edge_sdk.errors import UsageError
    from edge_sdk.runtimes.registry import open_artifact

    path = Bundle.open(serve_bundle).artifact("denoiser", "onnx", "fp32").path
    for url in (None, "ftp://host:1", "http://host:1/some/path"):
        with pytest.raises(UsageError, match="url"):
            open_artifact(path, "remote", options={"url": url})
