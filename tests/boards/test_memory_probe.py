"""The memory probe measures the main component at the planned size, not only at small sizes."""

from __future__ import annotations

import json

import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.planning import memory_probe
from edge_sdk.planning.memory_estimate import MB, ComponentCost
from edge_sdk.planning.memory_probe import component_cost, probe_at
from edge_sdk.planning.planner import PlanRequest, plan


def _cost(samples, **kw) -> ComponentCost:
    return ComponentCost(role="denoiser", runtime="onnxruntime", base=100 * MB, session=50 * MB, c0=1e6, c1=1000.0,
                         c2=0.0, unit="cell", source="measured", samples=samples, **kw)


def test_a_sample_at_the_size_is_a_floor_for_the_estimate():
    # The fit says 1e6 + 1000 * 4096 = 5.1 MB at 64x64 cells; a run measured there took 40 MB first
    # and 60 MB once repeated: the estimate is the measurement, per batch item.
    cost = _cost([[16, 2e6, 2e6], [32, 3e6, 3e6], [64, 40e6, 60e6]])
    assert cost.sample_at(64 * 64) == [64, 40e6, 60e6]
    assert cost.activation(64 * 64) == 40_000_000
    assert cost.activation(64 * 64, repeated=True) == 60_000_000
    assert cost.activation(64 * 64, batch=2) == 80_000_000
    # Elsewhere the fit stands (no sample at 48x48), and a non-square size matches its side's square.
    assert cost.sample_at(48 * 48) is None and cost.activation(48 * 48) == int(1e6 + 1000 * 48 * 48)
    assert _cost([[(48 * 64) ** 0.5, 9e6, 9e6]]).sample_at(48 * 64) is not None
    # A fit above the measurement keeps the fit (the floor never lowers an estimate).
    assert _cost([[64, 1e6, 1e6]]).activation(64 * 64) == int(1e6 + 1000 * 4096)


def test_a_runtime_whose_batch_holds_the_fixed_part_once_counts_it_once():
    """OpenVINO lays a model's weights out on its first call (c0: 2.4-2.7 GB for SD 1.5's UNet at
    any size), once per session: a batched-CFG call holds it once, and only the size-dependent part
    per item. ONNX Runtime (``fixed_once`` False) holds all of it per item."""
    from edge_sdk.runtimes.registry import memory_facts

    assert [memory_facts(r)["batch_holds_fixed_once"] for r in ("openvino", "onnxruntime")] == [True, False]
    ov = _cost([[16, 2e6, 2e6], [32, 3e6, 3e6], [64, 40e6, 60e6]], fixed_once=True)
    # From the fit: c0 (1 MB) once, 1000 bytes a cell per item.
    assert ov.activation(48 * 48, batch=2) == int(1e6 + 2 * 1000 * 48 * 48)
    assert _cost([]).activation(48 * 48, batch=2) == int(2 * (1e6 + 1000 * 48 * 48))
    # At a measured size: the measurement, plus a second item's share less c0.
    assert ov.activation(64 * 64, batch=2) == 40_000_000 + 39_000_000


def test_a_runtime_that_fuses_attention_gets_no_score_matrix_floor(bundle):
    """The decoder fit's floor (one fp32 score matrix per latent cell pair) is for engines that hold
    the scores whole. OpenVINO's CPU plugin fuses attention: the heavy decoder at 128x128 cells
    measured ~100 MB there, where a whole score matrix is 1 GB; with the floor its plan at 224x224
    was estimated at 3.8x the measured peak."""
    from edge_sdk.runtimes.registry import memory_facts

    assert [memory_facts(r)["materialises_attention"] for r in ("openvino", "onnxruntime")] == [False, True]
    art = bundle.artifact("decoder", "onnx", "fp32")
    ov = component_cost(bundle, "decoder", "openvino", art, threads=2)
    side = max(s[0] for s in ov.samples)
    measured = ov.sample_at(side * side)[1]
    assert measured < 4.0 * (side * side) ** 2 / 4, (side, measured)  # under a quarter of one score matrix
    assert ov.c2 < 4.0 and ov.activation(side * side) < 1.25 * measured  # the fit follows the samples


@pytest.fixture(scope="module")
def bundle(heavy_bundle):
    return Bundle.open(heavy_bundle)


def test_the_plan_measures_the_denoiser_at_the_requested_size_and_caches_it(bundle):
    art = bundle.artifact("denoiser", "onnx", "fp32")
    small = component_cost(bundle, "denoiser", "onnxruntime", art, threads=2)
    assert small.source == "measured" and small.sample_at(40 * 40) is None
    sides = {s[0] for s in small.samples}
    cost = component_cost(bundle, "denoiser", "onnxruntime", art, threads=2, target=(40, 40))
    # One more sample, at 40x40 cells, beside the ones from the small sizes; session and base kept.
    assert {s[0] for s in cost.samples} == sides | {40.0}
    assert (cost.base, cost.session) == (small.base, small.session)
    measured = cost.sample_at(40 * 40)
    assert measured[1] > 0 and cost.activation(40 * 40) >= measured[1]
    # Cached with the new sample: asking again runs nothing (the same figures come back).
    again = component_cost(bundle, "denoiser", "onnxruntime", art, threads=2, target=(40, 40))
    assert again.samples == cost.samples
    cached = [json.loads(p.read_text()) for p in memory_probe._cache_dir().glob("*.json")]
    assert any([40.0, *measured[1:]] in c["samples"] for c in cached)
    # A non-square request is run as it is: side sqrt(h * w).
    wide = component_cost(bundle, "denoiser", "onnxruntime", art, threads=2, target=(24, 48))
    assert wide.sample_at(24 * 48) is not None


def test_no_target_run_where_this_machine_lacks_the_memory(bundle, monkeypatch):
    art = bundle.artifact("denoiser", "onnx", "fp32")
    cost = component_cost(bundle, "denoiser", "onnxruntime", art, threads=2)
    monkeypatch.setattr(memory_probe, "_TARGET_SHARE", 1e-6)  # nothing fits in a millionth of the memory
    assert probe_at(bundle, "denoiser", "onnxruntime", art, cost, (56, 56), threads=2) is cost


def test_board_plans_carry_the_measurement_at_their_size(bundle):
    p = plan(bundle, "rpi4-4gb", PlanRequest(height=96, width=96))  # 48x48 latent cells (vae_downsample 2)
    art = bundle.artifact("denoiser", "onnx", "fp32")
    cost = component_cost(bundle, "denoiser", "onnxruntime", art, threads=p.components["denoiser"].threads)
    assert cost.sample_at(48 * 48) is not None


def test_a_stage_that_opens_a_component_counts_what_the_open_holds_for_a_moment(bundle):
    """``open_extra`` (measured by the probe: the open's peak above the session it leaves) raises the
    stage that opens the component when it is larger than the stage's activations."""
    req = PlanRequest(height=96, width=96)
    before = plan(bundle, "x86-64-generic", req)
    cp = before.components["decoder"]
    art = bundle.artifact("decoder", cp.format, cp.precision, cp.variant)
    component_cost(bundle, "decoder", cp.runtime, art, threads=cp.threads)
    # The very entry the plan reads (plan options, the plan's threads): other tests cache the same
    # decoder under other options and thread counts.
    sha = memory_probe._entry_sha(bundle, "decoder", art)
    key = memory_probe._cache_dir() / f"{sha}-{cp.runtime}-cpu-t{cp.threads}-v{memory_probe.PROFILE_VERSION}.json"
    saved = key.read_text()
    assert isinstance(json.loads(saved)["open_extra"], int)  # the probe recorded it
    try:
        key.write_text(json.dumps({**json.loads(saved), "open_extra": 4096 * MB}))
        after = plan(bundle, "x86-64-generic", req)
    finally:
        key.write_text(saved)
    # The decode stage now peaks at the open (4 GiB above the held sessions) instead of its
    # activations; the denoise stage, which does not open the decoder, is unchanged.
    assert after.estimates["denoise"] == before.estimates["denoise"]
    grown = after.estimates["decode"] - before.estimates["decode"]
    assert 4096 * MB - 600 * MB < grown <= 4096 * MB, grown


def test_other_session_options_are_measured_with_them_and_cached_apart(bundle):
    """A streamed plan runs every component without ONNX Runtime's CPU arena: the probe measures
    a component with the options it will run with, and caches that apart from the plan options'
    cost (an options tag in the key)."""
    from edge_sdk.runtimes.registry import plan_options, streamed_options

    art = bundle.artifact("decoder", "onnx", "fp32")
    plain = component_cost(bundle, "decoder", "onnxruntime", art, threads=2)
    lean_opts = {**plan_options("onnxruntime"), **streamed_options("onnxruntime")}
    lean = component_cost(bundle, "decoder", "onnxruntime", art, threads=2, options=lean_opts)
    keys = sorted(p.name for p in memory_probe._cache_dir().glob(f"{art.files[0][2]}-onnxruntime-cpu-t2*.json"))
    assert len(keys) == 2 and sum("-t2-o" in k for k in keys) == 1, keys
    # Without the arena, freed blocks go back to the allocator at once and are reused within the
    # call: at the largest size both measured, the arena-free later call peaks lower (measured
    # here: 362 vs 383 MB at 96x96 cells; SD 1.5's VAE at 24-cell tiles: 147 vs 227 MB).
    side = max(s[0] for s in plain.samples)
    arena, free = plain.sample_at(side * side), lean.sample_at(side * side)
    assert free[2] < arena[2]
