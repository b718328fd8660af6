"""`edge-sdk bench` / `edge-sdk tune` on a real converted bundle (ONNX fp32 + fp16, real ORT sessions).

Timings are never asserted (the machine is shared): only the report's structure, that the numbers
hang together, and the quality figures, which are deterministic for a fixed seed.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.errors import PlanError, UsageError
from edge_sdk.measure.bench import BenchConfig, bench, plan_for_config, plan_label, psnr

pytestmark = pytest.mark.slow  # converts or plans whole bundles: seconds each, in the full run

STEPS = 3


@pytest.fixture(scope="module")
def fp16_bundle(tmp_path_factory, tiny_factory):
    import edge_sdk

    out = tmp_path_factory.mktemp("bench") / "tiny16.bundle"
    # The tiny random-weight denoiser's fp16 export is 1.4% off fp32 (rel L2), over the default 1%
    # fp16 bar, so the bar is raised explicitly; quality is what these tests measure anyway.
    edge_sdk.convert(tiny_factory, out, formats="onnx", precisions="fp32,fp16", name="tiny16", tolerance=0.05)
    return out


def test_psnr_definition():
    ref = np.zeros((1, 3, 4, 4), np.float32)
    # Constant error 0.1 on a [-1, 1] range: MSE 0.01, peak-to-peak 2 -> 10*log10(4/0.01) = 26.0206 dB.
    assert psnr(ref, ref + 0.1) == pytest.approx(26.0206, abs=1e-3)
    assert math.isinf(psnr(ref, ref.copy()))
    # Values beyond the range are clipped first, as the saved image is: 5.0 counts as 1.0 -> MSE 1 -> 6.02 dB.
    assert psnr(ref, ref + 5.0) == pytest.approx(6.0206, abs=1e-3)
    with pytest.raises(UsageError):
        psnr(ref, np.zeros((1, 3, 4, 5), np.float32))


def test_bench_reports_every_field_per_config(fp16_bundle):
    rep = bench(fp16_bundle, runtimes="onnxruntime", steps=[STEPS], threads=1, repeats=2, min_seconds=0)
    assert [r.label for r in rep.results] == ["onnxruntime:onnx/fp32", "onnxruntime:onnx/fp16"]
    for r in rep.results:
        assert r.ok, r.error
        den = r.components["denoiser"]
        assert den["calls"] == STEPS  # one denoiser call per step (unconditional: no CFG branch)
        assert 0 < den["median_ms"] <= den["p90_ms"]
        assert 0 < r.end_to_end_min_ms <= r.end_to_end_ms <= r.end_to_end_p90_ms
        assert 0 < r.per_step_ms * STEPS <= r.end_to_end_p90_ms  # the loop is part of the whole
        assert r.runs >= 2
        # Each config ran in its own process: its peak includes the runtime and model on top of the
        # interpreter's base, and both are plausible sizes for a Python process with numpy and ORT.
        assert 10 < r.base_rss_mb < r.peak_rss_mb < 4096
        assert r.image.shape == (1, 3, 32, 32)
    fp32, fp16 = rep.results
    assert math.isinf(fp32.psnr_db) and fp32.reference == "onnxruntime:onnx/fp32"
    # fp16 weights/activations on a random tiny net: close to fp32 but not identical (measured ~70 dB).
    assert 20 < fp16.psnr_db < math.inf
    data = json.loads(json.dumps(rep.to_json(), allow_nan=False))  # strict JSON: no NaN/Infinity
    assert data["results"][0]["psnr_db"] == "inf"
    assert data["machine"]["arch"] and data["settings"]["steps"] == [STEPS]


def test_fp32_reference_is_added_when_not_asked_for(fp16_bundle):
    rep = bench(fp16_bundle, runtimes="onnxruntime", precisions="fp16", steps=2, repeats=1, min_seconds=0,
                isolate=False)
    labels = [r.label for r in rep.results]
    assert labels == ["onnxruntime:onnx/fp32", "onnxruntime:onnx/fp16"]
    assert "fp32 reference" in " ".join(rep.results[0].notes)
    assert 20 < rep.results[1].psnr_db < math.inf


def test_bench_refuses_what_cannot_run(fp16_bundle):
    with pytest.raises(UsageError, match="nothing to measure"):
        bench(fp16_bundle, runtimes="onnxruntime", precisions="int8-static", isolate=False)
    with pytest.raises(UsageError, match="not usable|unknown"):
        bench(fp16_bundle, runtimes="no-such-runtime", isolate=False)


def test_plan_for_config_falls_back_to_fp32_per_component(fp16_bundle):
    b = Bundle.open(fp16_bundle)
    p = plan_for_config(b, BenchConfig("onnxruntime", "onnx", "int8-static"), threads=2)
    assert p.components["denoiser"].precision == "fp32" and p.components["denoiser"].threads == 2
    assert "no onnx/int8-static" in p.notes[0]


def test_tune_writes_a_plan_that_load_follows(fp16_bundle, tmp_path):
    import edge_sdk
    from edge_sdk.measure.tune import tune, tuned_plan_path
    from edge_sdk.planning.board import detect_board

    board, _ = detect_board()
    if board is None:
        pytest.skip("no board profile matches this machine")
    bundle = tmp_path / "b.bundle"
    shutil.copytree(fp16_bundle, bundle)
    with pytest.raises(PlanError, match="no tuned plan"):
        edge_sdk.load(bundle, plan="tuned")
    res = tune(bundle, None, steps=STEPS, runtimes=["onnxruntime"], threads=1, repeats=1, min_seconds=0,
               measure_memory=False)
    assert res.path == tuned_plan_path(bundle, board) and res.path.parent == tmp_path  # beside, not inside
    assert {c.label for c in res.candidates} == {"onnxruntime:onnx/fp32", "onnxruntime:onnx/fp16"}
    assert all(c.psnr_db >= 30 for c in res.candidates)  # both clear the bar, so speed decides
    assert res.chosen.end_to_end_ms == min(c.end_to_end_ms for c in res.candidates)
    Bundle.open(bundle)  # the bundle's own files are untouched: it still verifies
    chosen = res.chosen.plan["components"]["denoiser"]

    auto = edge_sdk.load(bundle)  # no choice given: the tuned plan for this board
    explicit = edge_sdk.load(bundle, plan="tuned")
    for gen in (auto, explicit):
        cp = gen.plan.components["denoiser"]
        assert (cp.runtime, cp.format, cp.precision, cp.threads) == (
            chosen["runtime"], chosen["format"], chosen["precision"], 1)
        assert gen.plan.board == board and "tuned on" in gen.plan.notes[-1]
        out = gen.generate(steps=STEPS, seed=0)
        assert out.images.shape == (1, 32, 32, 3)
    # An explicit choice wins over the tuned plan.
    assert edge_sdk.load(bundle, precision="fp32").plan.components["denoiser"].threads is None

    # A tuned plan made for another version of the bundle is ignored, and refused when asked for.
    doc = json.loads(res.path.read_text())
    doc["manifest_sha256"] = "0" * 64
    res.path.write_text(json.dumps(doc))
    assert edge_sdk.load(bundle).plan.board is None
    with pytest.raises(PlanError, match="another version"):
        edge_sdk.load(bundle, plan="tuned")


def test_tune_keeps_only_plans_over_the_bar(fp16_bundle, tmp_path):
    from edge_sdk.measure.tune import tune

    bundle = tmp_path / "b.bundle"
    shutil.copytree(fp16_bundle, bundle)
    # fp16 is ~70 dB from fp32 here, so a 500 dB bar leaves only fp32 itself (inf): it is chosen.
    res = tune(bundle, "x86-64-generic", steps=2, runtimes=["onnxruntime"], min_psnr=500, repeats=1,
               min_seconds=0, isolate=False, measure_memory=False, write=False)
    assert res.chosen.label == "onnxruntime:onnx/fp32" and res.path is None
    assert not list(tmp_path.glob("*.tuned-*.json"))
    with pytest.raises(UsageError, match="quality bar"):
        tune(bundle, "x86-64-generic", min_psnr=-1, isolate=False, measure_memory=False)


def test_cli_bench_json_and_chart(fp16_bundle, tmp_path, cli):
    chart = tmp_path / "chart.png"
    r = cli("bench", str(fp16_bundle), "--runtimes", "onnxruntime", "--precisions", "fp16", "--steps", "2",
            "--threads", "1", "--repeats", "1", "--min-seconds", "0", "--in-process", "--json", "--chart", str(chart))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [x["label"] for x in data["results"]] == ["onnxruntime:onnx/fp32", "onnxruntime:onnx/fp16"]
    assert data["chart"] == str(chart) and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = cli("bench", str(fp16_bundle), "--size", "12x")
    assert bad.returncode != 0 and "WIDTHxHEIGHT" in bad.stderr and "Traceback" not in bad.stderr
    bad = cli("tune", str(fp16_bundle), "--board", "no-such-board")
    assert bad.returncode != 0 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def test_tune_considers_openvino_bf16_and_per_shape_compiles(fp16_bundle):
    """OpenVINO CPU candidates: the fp32 plan as is, compiled per shape, and (CPUs with bf16
    arithmetic) computing in bf16; only plans fp32 in weights and arithmetic are quality references."""
    from edge_sdk.measure.tune import candidate_plans, full_precision
    from edge_sdk.planning.board import load_board
    from edge_sdk.planning.plan import usable_runtimes
    from edge_sdk.runtimes.openvino import cpu_inference_precisions

    if "openvino" not in usable_runtimes():
        pytest.skip("openvino is not installed")
    plans, notes = candidate_plans(Bundle.open(fp16_bundle), load_board("x86-64-generic"), runtimes=["openvino"],
                                   threads=1, measure_memory=False)
    labels = [plan_label(p) for p in plans]
    bf16 = "bf16" in cpu_inference_precisions()
    want = {"openvino:onnx/fp32", "openvino:onnx/fp32+static", "openvino:onnx/fp16", "openvino:onnx/fp16+static"}
    # the bundle's one component is its denoiser; fp16 weights computed in bf16 hold half the source weights
    want |= {"openvino:onnx/fp32+bf16+static", "openvino:onnx/fp16+bf16+static"} if bf16 else set()
    assert set(labels) == want, labels
    assert labels[0] == "openvino:onnx/fp32" and full_precision(plans[0].to_json())
    assert [full_precision(p.to_json()) for p in plans] == [lab in ("openvino:onnx/fp32", "openvino:onnx/fp32+static")
                                                            for lab in labels]
    assert bf16 or any("no bf16" in n for n in notes)
