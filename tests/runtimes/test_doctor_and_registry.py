"""Runtime discovery through entry points (a real third-party package, installed), and `edge-sdk doctor`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_sdk.errors import RuntimeUnavailableError, UsageError
from edge_sdk.measure.doctor import cpu_info
from edge_sdk.runtimes.registry import available_runtimes, get_runtime, open_artifact, runtime_names

REPO = Path(__file__).resolve().parents[2]
BUILTIN = {"onnxruntime", "openvino", "litert", "torch"}


def test_builtin_runtimes_register_through_entry_points():
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="edge_sdk.runtimes")}
    assert BUILTIN <= set(eps)
    for name in BUILTIN:
        cls = get_runtime(name)
        assert cls.name == name and eps[name].endswith(cls.__name__)
    with pytest.raises(UsageError, match="unknown runtime 'rknn'"):
        get_runtime("rknn")


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """examples/third_party_runtime installed for real (pip, no network) into a private folder."""
    target = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(target), str(REPO / "examples" / "third_party_runtime")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return target


def test_third_party_runtime_is_discovered_and_runs(plugin_site, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_site))
    assert "npylinear" in runtime_names()
    info = available_runtimes()["npylinear"]
    assert info["available"] and info["version"] == "0.1.0"
    rng = np.random.default_rng(0)
    w0, b0, w1, b1 = (rng.standard_normal(s).astype(np.float32) for s in ((4, 8), (8,), (8, 2), (2,)))
    model = tmp_path / "mlp.npz"
    np.savez(model, W0=w0, b0=b0, W1=w1, b1=b1)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    with open_artifact(model, "npylinear") as rt:
        assert [(t.name, t.shape) for t in rt.inputs] == [("x", ("batch", 4))]
        y = rt.run({"x": x})["y"]
    np.testing.assert_allclose(y, np.tanh(x @ w0 + b0) @ w1 + b1, rtol=1e-6, atol=1e-6)
    # The CLI sees it too, in a fresh process.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "edge_sdk.cli.main", "doctor", "--json"], capture_output=True,
                       text=True, env=env, timeout=180)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["runtimes"]["npylinear"]["available"] is True


def _fake_dist(site: Path, name: str, entry: str, module_src: str) -> None:
    mod = entry.split(":")[0]
    (site / f"{mod}.py").write_text(module_src)
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[edge_sdk.runtimes]\n{name} = {entry}\n")


def test_broken_plugins_are_reported_not_raised(tmp_path, monkeypatch):
    _fake_dist(tmp_path, "notaruntime", "edge_fake_notrt:Thing", "class Thing:\n    pass\n")
    _fake_dist(tmp_path, "crashes", "edge_fake_crash:R", "raise RuntimeError('plugin bug at import')\n")
    _fake_dist(tmp_path, "missingdep", "edge_fake_missing:R", "import edge_sdk_no_such_engine\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = available_runtimes()
    assert BUILTIN <= set(found)
    assert "not an edge_sdk.runtimes.Runtime subclass" in found["notaruntime"]["reason"]
    assert "plugin bug at import" in found["crashes"]["reason"]
    assert "edge_sdk_no_such_engine" in found["missingdep"]["reason"]
    with pytest.raises(RuntimeUnavailableError, match="failed to import"):
        open_artifact("m.bin", "crashes")
    with pytest.raises(RuntimeUnavailableError, match="cannot be loaded here"):
        get_runtime("missingdep")


# -- doctor ----------------------------------------------------------------------------------------
PI5_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0b

Hardware\t: BCM2835
Model\t: Raspberry Pi 5 Model B Rev 1.0
"""
SPR_CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 avx avx2 f16c avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""


def test_cpu_features_from_cpuinfo(tmp_path):
    (tmp_path / "pi5").write_text(PI5_CPUINFO)
    (tmp_path / "spr").write_text(SPR_CPUINFO)
    pi = cpu_info(tmp_path / "pi5")
    assert pi["features"] == ["dotprod", "fp16", "neon"]
    assert pi["model"] == "BCM2835"
    spr = cpu_info(tmp_path / "spr")
    assert {"avx2", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx", "f16c"} <= set(spr["features"])
    assert "neon" not in spr["features"]
    assert cpu_info(tmp_path / "missing")["features"] == []


def test_doctor_cli_table_and_json(cli):
    r = cli("doctor", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    rts = data["runtimes"]
    for name in ("onnxruntime", "openvino", "litert"):
        assert rts[name]["available"] is True and rts[name]["version"]
    assert "CPUExecutionProvider" in rts["onnxruntime"]["providers"]
    assert "cpu" in rts["openvino"]["devices"]
    assert set(data["usable_device_runtimes"]) >= {"onnxruntime", "openvino", "litert"}
    assert "torch" not in data["usable_device_runtimes"]  # host only, never planned for a device
    assert data["python"] == ".".join(map(str, sys.version_info[:3]))
    assert data["cpu"]["features"] == cpu_info()["features"]
    r = cli("doctor")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(ln.startswith("runtime") and "usable" in ln for ln in lines)
    row = next(ln for ln in lines if ln.startswith("torch "))
    assert "host only" in row
    if data["board"] is not None:
        assert any(ln.startswith("board: ") for ln in lines)
