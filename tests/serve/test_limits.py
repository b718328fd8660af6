"""Request limits from the board plan: the largest size/n whose plan fits, and the plan loaded is that one."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.errors import UsageError
from edge_sdk.serve.limits import FieldError, check_request, limits_for, request_size

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_board_limits_come_from_the_plan(serve_bundle, tmp_path):
    b = Bundle.open(serve_bundle)
    # 32x32 at n=2 fits the generic x86 profile: kept, and the plan is made for exactly that request.
    lim, plan = limits_for(b, board="x86-64-generic", max_size=(32, 32), max_n=2, max_steps=5000)
    assert (lim.max_width, lim.max_height, lim.max_n) == (32, 32, 2)
    assert plan is not None and plan.size == (32, 32) and plan.board == "x86-64-generic"
    assert lim.max_steps == 1000  # never more steps than the schedule's 1000 timesteps
    # A board with a 300 MB cap. At 2048x2048 every image holds 128 MB of output buffers, so n=4
    # cannot fit: n shrinks (and the plan loaded decodes in tiles) until it does. At 4096x4096 one
    # image alone is 512 MB: no n fits, so the native size is kept instead, rather than accepting
    # requests the board cannot run.
    small = tmp_path / "small.toml"
    text = (REPO / "boards" / "x86-64-generic.toml").read_text()
    text = text.replace('ram_mb = "detect"', "ram_mb = 400").replace('name = "x86-64-generic"', 'name = "test-small"')
    small.write_text(text.split("[detect]")[0])
    lim, plan = limits_for(b, board=str(small), max_size=(2048, 2048), max_n=4)
    assert (lim.max_width, lim.max_height) == (2048, 2048) and lim.max_n < 4 and plan.size == (2048, 2048)
    assert plan.memory_cap_bytes == 300 * 2**20 and plan.estimates["peak"] <= plan.memory_cap_bytes
    assert plan.decode_tiling is not None
    lim, plan = limits_for(b, board=str(small), max_size=(4096, 4096), max_n=4)
    assert (lim.max_width, lim.max_height) == (16, 16) and plan.size == (16, 16)
    assert plan.estimates["peak"] <= plan.memory_cap_bytes
    with pytest.raises(UsageError, match="needs --board"):
        limits_for(b, remote={"denoiser": "http://127.0.0.1:1"})


def test_check_request_names_the_field():
    from edge_sdk.serve.limits import Limits

    lim = Limits(max_width=64, max_height=32, multiple=8, max_n=2, max_steps=30, default_size=(32, 32))
    check_request(lim, width=64, height=32, n=2, steps=30)
    for kw, param in ((dict(width=72, height=32, n=1, steps=1), "size"),
                      (dict(width=60, height=32, n=1, steps=1), "size"),
                      (dict(width=64, height=32, n=3, steps=1), "n"), (dict(width=64, height=32, n=True, steps=1), "n"),
                      (dict(width=64, height=32, n=1, steps=31), "steps"),
                      (dict(width=64, height=32, n=1, steps=0), "steps")):
        with pytest.raises(FieldError) as e:
            check_request(lim, **kw)
        assert e.value.param == param
    assert request_size(None, lim) == (32, 32) and request_size("64x32", lim) == (64, 32)
    for bad in ("64", "x32", "-8x8", 64, "64x32x1"):
        with pytest.raises(FieldError):
            request_size(bad, lim)
