"""`edge-sdk serve` as a real process on 127.0.0.1, driven with httpx."""

from __future__ import annotations

import base64
import json
import re
import signal
import socket
import threading
import time

import httpx
import numpy as np
import pytest

import edge_sdk

PROMPT = "a painting of a blue dog in the park"


def decode_png(b64: str) -> np.ndarray:
    import cv2

    img = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_UNCHANGED)
    return img[..., ::-1]  # BGR -> RGB


def metric(url: str, name: str, **labels) -> float:
    text = httpx.get(url + "/metrics", headers=_auth()).text
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def _auth(token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture(scope="module")
def server(serve_bundle, serve_factory):
    s = serve_factory(serve_bundle, "--max-queue", "1", "--max-steps", "1000", "--max-batch", "2")
    yield s
    s.stop()


@pytest.mark.slow
def test_images_equal_in_process_api_for_same_seed(server, serve_bundle):
    r = httpx.post(server.url + "/v1/images/generations", timeout=120,
                   json={"prompt": PROMPT, "n": 2, "size": "16x16", "response_format": "b64_json", "steps": 3,
                         "seed": 11, "guidance": 2.5, "sampler": "euler", "model": "ignored-by-us"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["edge_sdk"]["seed"] == 11 and len(body["data"]) == 2
    got = np.stack([decode_png(d["b64_json"]) for d in body["data"]])
    with edge_sdk.load(serve_bundle) as g:
        want = g.generate(prompt=[PROMPT] * 2, seed=11, steps=3, guidance=2.5, sampler="euler", batch=2).images
    # Same process-independent computation (same files, runtime, seeds) and lossless PNG: exact.
    np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_sse_progress_then_image(server):
    events = []
    with httpx.stream("POST", server.url + "/v1/images/generations", timeout=120,
                      json={"prompt": PROMPT, "steps": 5, "seed": 1, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    kinds = [e["type"] for e in events]
    assert kinds == ["image_generation.progress"] * 5 + ["image_generation.completed"]
    assert [e["step"] for e in events[:5]] == [1, 2, 3, 4, 5]
    assert decode_png(events[-1]["data"][0]["b64_json"]).shape == (16, 16, 3)


@pytest.mark.slow
def test_v2_endpoints(server, serve_bundle):
    assert httpx.get(server.url + "/v2/health/live").json() == {"live": True}
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200
    meta = httpx.get(server.url + "/v2/models/denoiser").json()
    assert [t["name"] for t in meta["inputs"]] == ["sample", "timestep", "encoder_hidden_states"]
    assert meta["inputs"][0] == {"name": "sample", "datatype": "FP32", "shape": [-1, 4, 8, 8]}
    assert httpx.get(server.url + "/v2/models/nope").status_code == 404
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    t = np.array([500.0], np.float32)
    c = rng.standard_normal((1, 8, 32)).astype(np.float32)
    req = {"id": "r1", "inputs": [
        {"name": "sample", "shape": [1, 4, 8, 8], "datatype": "FP32", "data": x.ravel().tolist()},
        {"name": "timestep", "shape": [1], "datatype": "FP32", "data": t.tolist()},
        {"name": "encoder_hidden_states", "shape": [1, 8, 32], "datatype": "FP32", "data": c.ravel().tolist()}]}
    r = httpx.post(server.url + "/v2/models/denoiser/infer", json=req, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "r1" and out["outputs"][0]["name"] == "noise_pred"
    got = np.asarray(out["outputs"][0]["data"], np.float32).reshape(out["outputs"][0]["shape"])
    from edge_sdk.bundle import Bundle
    from edge_sdk.runtimes.registry import open_artifact

    with open_artifact(Bundle.open(serve_bundle).artifact("denoiser", "onnx", "fp32").path, "onnxruntime") as rt:
        want = rt.run({"sample": x, "timestep": t, "encoder_hidden_states": c})["noise_pred"]
    np.testing.assert_array_equal(got, want)  # JSON round-trips float32 exactly; same file, same runtime
    # The same call through tritonclient (binary tensor extension) gives the same numbers.
    import tritonclient.http as tc

    cli = tc.InferenceServerClient(server.url.removeprefix("http://"))
    ins = []
    for name, a in (("sample", x), ("timestep", t), ("encoder_hidden_states", c)):
        i = tc.InferInput(name, list(a.shape), "FP32")
        i.set_data_from_numpy(a, binary_data=True)
        ins.append(i)
    np.testing.assert_array_equal(cli.infer("denoiser", ins).as_numpy("noise_pred"), want)
    # A wrong input is a 400 with the protocol's error shape.
    bad = {"inputs": [{"name": "sample", "shape": [1, 4, 8, 8], "datatype": "FP32", "data": [0.0] * 3}]}
    r = httpx.post(server.url + "/v2/models/denoiser/infer", json=bad)
    assert r.status_code == 400 and "values do not fill shape" in r.json()["error"]


@pytest.mark.slow
def test_oversized_and_bad_requests_get_one_error_format(server):
    cases = [({"prompt": PROMPT, "n": 3}, "n"), ({"prompt": PROMPT, "size": "64x64"}, "size"),
             ({"prompt": PROMPT, "size": "18x16"}, "size"), ({"prompt": PROMPT, "steps": 1001}, "steps"),
             ({"prompt": PROMPT, "size": "big"}, "size"), ({"prompt": ""}, "prompt"),
             ({"prompt": PROMPT, "response_format": "url"}, "response_format"),
             ({"prompt": PROMPT, "sampler": "nope"}, "sampler"), ({"prompt": PROMPT, "evil": 1}, "evil"),
             ({"prompt": PROMPT, "seed": -1}, "seed"), ({"prompt": PROMPT, "guidance": "x"}, "guidance")]
    for body, param in cases:
        r = httpx.post(server.url + "/v1/images/generations", json=body)
        assert r.status_code == 400, (body, r.text)
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["param"] == param and err["code"] == 400
    r = httpx.post(server.url + "/v1/images/generations", content=b"{not json",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(server.url + "/v1/images/generations", content=b"x" * (2 << 20))
    assert r.status_code == 413


@pytest.mark.slow
def test_full_queue_is_429_and_disconnect_cancels(server):
    """One running + --max-queue 1 waiting: the third gets 429; the running one's client leaves: cancelled."""
    url = server.url + "/v1/images/generations"
    cancelled0 = metric(server.url, "edge_sdk_cancelled_total")
    # The long request over a plain socket, so the test controls exactly when the connection drops
    # (a client killed mid-request: curl ^C, a phone losing signal).
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"prompt": PROMPT, "steps": 999, "seed": 0}).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    deadline = time.monotonic() + 60
    while metric(server.url, "edge_sdk_requests_in_flight") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    waiting = {}
    w = threading.Thread(target=lambda: waiting.setdefault("r", httpx.post(url, timeout=120, json={
        "prompt": PROMPT, "steps": 2, "seed": 0})))
    w.start()
    while metric(server.url, "edge_sdk_queue_depth") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t0 = time.perf_counter()
    r = httpx.post(url, json={"prompt": PROMPT, "steps": 2})
    refuse_ms = (time.perf_counter() - t0) * 1000
    assert r.status_code == 429 and r.headers["retry-after"] and r.json()["error"]["type"] == "queue_full"
    assert metric(server.url, "edge_sdk_rejected_total", reason="queue_full") >= 1
    # The client of the running request goes away: its run stops at the next step, the queued one runs.
    t1 = time.perf_counter()
    sock.close()
    w.join(timeout=60)
    assert waiting["r"].status_code == 200
    freed_s = time.perf_counter() - t1
    assert metric(server.url, "edge_sdk_cancelled_total") == cancelled0 + 1
    assert freed_s < 10, f"the disconnected run held the worker {freed_s:.1f} s"
    print(f"queue: 429 answered in {refuse_ms:.1f} ms; worker freed {freed_s * 1000:.0f} ms after disconnect")


@pytest.mark.slow
def test_stream_disconnect_cancels_the_run(server):
    cancelled0 = metric(server.url, "edge_sdk_cancelled_total")
    t0 = time.perf_counter()
    with httpx.stream("POST", server.url + "/v1/images/generations", timeout=60,
                      json={"prompt": PROMPT, "steps": 999, "seed": 0, "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                assert json.loads(line[6:])["step"] == 1
                break  # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 20
    while metric(server.url, "edge_sdk_cancelled_total") < cancelled0 + 1:
        assert time.monotonic() < deadline, "the run went on after its stream was closed"
        time.sleep(0.05)
    while metric(server.url, "edge_sdk_requests_in_flight") > 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert time.perf_counter() - t0 < 20


@pytest.mark.slow
def test_metrics_and_bearer_token(serve_bundle, serve_factory):
    s = serve_factory(serve_bundle, "--token-env", "EDGE_SDK_TEST_TOKEN", env={"EDGE_SDK_TEST_TOKEN": "s3cret"})
    try:
        assert httpx.get(s.url + "/v2/health/live").status_code == 200  # probes stay open
        r = httpx.post(s.url + "/v1/images/generations", json={"prompt": PROMPT})
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(s.url + "/metrics", headers=_auth("wrong")).status_code == 401
        r = httpx.post(s.url + "/v1/images/generations", json={"prompt": PROMPT, "steps": 2}, headers=_auth("s3cret"),
                       timeout=60)
        assert r.status_code == 200
        text = httpx.get(s.url + "/metrics", headers=_auth("s3cret")).text
        peak = float(re.search(r"^edge_sdk_peak_memory_bytes (\S+)$", text, re.M).group(1))
        assert 50e6 < peak < 4e9
        assert re.search(r'^edge_sdk_request_seconds_count\{endpoint="images"\} 1\.0$', text, re.M)
        assert re.search(r"^edge_sdk_queue_depth 0\.0$", text, re.M)
    finally:
        assert s.stop() == 0


@pytest.mark.slow
def test_graceful_shutdown_finishes_in_flight_work(serve_bundle, serve_factory):
    s = serve_factory(serve_bundle, "--max-steps", "1000")
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("r", httpx.post(
        s.url + "/v1/images/generations", timeout=120, json={"prompt": PROMPT, "steps": 150, "seed": 0})))
    th.start()
    deadline = time.monotonic() + 60
    while metric(s.url, "edge_sdk_requests_in_flight") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    s.proc.send_signal(signal.SIGTERM)
    th.join(timeout=120)
    assert out["r"].status_code == 200 and len(out["r"].json()["data"]) == 1  # finished, not dropped
    assert s.proc.wait(timeout=60) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(s.url + "/v2/health/live")
