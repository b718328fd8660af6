"""`edge-sdk boards`, `boards show`, `plan` and `run --board` through the real console script."""

from __future__ import annotations

import json

import pytest

from edge_sdk.planning.board import board_names


def test_boards_lists_and_shows_profiles(cli):
    r = cli("boards")
    assert r.returncode == 0, r.stderr
    for name in board_names():
        assert name in r.stdout
    r = cli("boards", "show", "jetson-orin-nano-8gb", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["cap_bytes"] == 6144 * 2**20 and d["unified"] is True
    r = cli("boards", "show", "jetson-orin-nano-8gb")
    assert "6144 MB (CPU + GPU, unified)" in r.stdout and "ollama #18396" in r.stdout
    r = cli("boards", "show", "no-such-board")
    assert r.returncode == 7 and r.stderr.startswith("error: unknown board") and "Traceback" not in r.stderr


@pytest.mark.slow
def test_plan_prints_choices_and_refuses_what_does_not_fit(cli, heavy_bundle):
    r = cli("plan", str(heavy_bundle), "--board", "rpi-zero-2w", "--size", "224x224", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["cfg"] == "sequential" and d["decode_tiling"]["tile"] > 0
    assert d["estimates_mb"]["peak"] <= d["memory_cap_mb"]
    r = cli("plan", str(heavy_bundle), "--board", "rpi-zero-2w", "--size", "224x224")
    assert "CFG sequential" in r.stdout and "denoise" in r.stdout and "% of cap" in r.stdout
    r = cli("plan", str(heavy_bundle), "--board", "rpi-zero-2w", "--size", "1024x1024")
    assert r.returncode == 7 and "over its 352 MB cap" in r.stderr and "what would fit: --size" in r.stderr


@pytest.mark.slow
def test_run_follows_the_board_plan(cli, heavy_bundle, tmp_path):
    out = tmp_path / "o.png"
    r = cli("run", str(heavy_bundle), "--board", "rpi-zero-2w", "--size", "96x96", "--steps", "1", "--class", "2",
            "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["size"] == [96, 96] and out.stat().st_size > 0
