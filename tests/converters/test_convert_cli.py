"""`edge-sdk convert` and `edge-sdk formats` through the CLI group (in process: torch is loaded once)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from edge_sdk.cli.common import run_cli
from edge_sdk.cli.main import cli

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "tiny_unet.py") + ":factory"


def test_convert_json_on_stdout_and_a_line_per_component_format_precision_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_SDK_NO_PROGRESS", "1")
    out = tmp_path / "t.bundle"
    r = CliRunner().invoke(cli, ["convert", EXAMPLE, "-o", str(out), "--format", "onnx",
                                 "--precision", "fp32,int8-weight", "--json"])
    assert r.exit_code == 0, r.output
    lines = [ln.split("s  ", 1)[1].split() for ln in r.stderr.splitlines() if "s  " in ln]
    assert ["denoiser", "onnx", "fp32", "convert"] in lines
    assert ["denoiser", "onnx", "int8-weight", "validate"] in lines
    assert ["denoiser", "onnx", "int8-weight", "done"] in lines
    assert lines[-1] == ["bundle", "write"]
    data = json.loads(r.stdout)
    arts = {a["precision"]: a for a in data["artifacts"]}
    assert arts["fp32"]["rel_l2"] < 1e-4  # fp32 bar
    assert arts["int8-weight"]["rel_l2"] < 2e-2  # int8 weights: ~6e-3 measured
    assert arts["int8-weight"]["size_bytes"] < 0.65 * arts["fp32"]["size_bytes"]
    assert data["failures"] == [] and data["bundle"] == str(out)


def test_convert_usage_errors_are_one_line_and_exit_2(tmp_path, capsys):
    code = run_cli(cli, ["convert", EXAMPLE, "-o", str(tmp_path / "x.bundle"), "--precision", "int4"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: unknown precision 'int4'") and "Traceback" not in err
    code = run_cli(cli, ["convert", EXAMPLE, "-o", str(tmp_path / "x.bundle"), "--format", "coreml"])
    assert code == 2 and "unknown format 'coreml'" in capsys.readouterr().err


def test_formats_prints_the_support_matrix():
    r = CliRunner().invoke(cli, ["formats", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert set(data["formats"]) == {"onnx", "openvino", "tflite"}
    assert set(data["formats"]["tflite"]) == {"fp32", "fp16", "int8-weight", "int8-static"}
    assert data["default_tolerance"]["fp32"] == 1e-4
    r = CliRunner().invoke(cli, ["formats"])
    assert "openvino  int8-static" in r.stdout
