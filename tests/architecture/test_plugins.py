"""Adding a runtime or a format takes no change to edge-sdk (issue 15).

``plugin/`` is an outside package, as a third party would ship it: a runtime under a new name
("ortwrap", ONNX Runtime driven through edge-sdk's public ``Runtime`` interface), and a new format
("ronnx": ONNX bytes in a .ronnx file) with its descriptor, converter and runtime ("ronnxrt"). It
is pip-installed into a temporary folder that only the subprocesses below see (PYTHONPATH): the
edge-sdk under test is not touched. A user board profile that lists only the plugin's runtime
then plans and runs a bundle through the real ``edge-sdk`` command.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PLUGIN_SRC = Path(__file__).parent / "plugin"
STEPS = "4"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The plugin installed by pip into a folder of its own (pip builds in a copy of the source)."""
    src = tmp_path_factory.mktemp("plugin-src") / "plugin"
    shutil.copytree(PLUGIN_SRC, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    target = tmp_path_factory.mktemp("plugin-site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--no-build-isolation", "--target", str(target), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(target.glob("edge_sdk_example_plugin-*.dist-info/entry_points.txt"))
    return target


@pytest.fixture(scope="module")
def plugin_env(plugin_site, tmp_path_factory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("plugin-cache")
    return {"PYTHONPATH": os.pathsep.join([str(plugin_site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "EDGE_SDK_CACHE_DIR": str(cache)}


def _user_board(tmp_path: Path, runtime: str) -> Path:
    """The generic x86 profile, renamed, whose only runtime is ``runtime`` (a user's own file)."""
    text = (REPO / "boards" / "x86-64-generic.toml").read_text()
    text = re.sub(r'^name = ".*"$', f'name = "my-{runtime}-host"', text, count=1, flags=re.M)
    text = re.sub(r"^preference = \[.*\]$", f'preference = ["{runtime}:cpu"]', text, count=1, flags=re.M)
    path = tmp_path / f"my-{runtime}-host.toml"
    path.write_text(text)
    return path


def _image(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def _run(cli, bundle: Path, out: Path, *args: str, env: dict[str, str]) -> dict:
    proc = cli("run", str(bundle), "--steps", STEPS, "--seed", "3", "--out", str(out), "--json", *args, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def reference(tiny_bundle) -> np.ndarray:
    """The same bundle, seed and steps on the built-in onnxruntime adapter, single-threaded."""
    import edge_sdk

    with edge_sdk.load(tiny_bundle, runtime="onnxruntime", threads=1) as gen:
        assert gen.plan.components["denoiser"].runtime == "onnxruntime"
        return gen.generate(steps=int(STEPS), seed=3).images[0].astype(np.int16)


@contextlib.contextmanager
def _plugin_on_sys_path(site: Path):
    """The plugin visible to this process's entry-point lookups, then gone again for later tests."""
    from edge_sdk.formats import registry as formats

    sys.path.insert(0, str(site))
    formats._installed.cache_clear()
    try:
        yield
    finally:
        sys.path.remove(str(site))
        formats._installed.cache_clear()
        for name in [m for m in sys.modules if m.startswith("edge_sdk_example_plugin")]:
            del sys.modules[name]


# Tolerance: the plugin and the built-in adapter run the same graph on the same ONNX Runtime CPU
# kernels; only session options differ (the built-in turns the memory pattern off), which changes
# no arithmetic. So the 8-bit images must agree to 1 level (a value rounding on a .5 boundary when
# the thread count differs), not merely look alike.
MAX_LEVELS = 1


@pytest.mark.slow
def test_third_party_runtime_plans_and_runs(cli, plugin_env, tiny_bundle, reference, tmp_path):
    from edge_sdk.errors import PlanError
    from edge_sdk.planning.planner import PlanRequest, plan

    board = _user_board(tmp_path, "ortwrap")
    # Without the plugin, the profile names a runtime nobody provides: no plan.
    with pytest.raises(PlanError, match=r"runs on board my-ortwrap-host \(ortwrap:cpu\)"):
        plan(_open(tiny_bundle), str(board), PlanRequest(measure=False))
    out = tmp_path / "ortwrap.png"
    got = _run(cli, tiny_bundle, out, "--board", str(board), env=plugin_env)
    assert got["plan"] == {"denoiser": "ortwrap:onnx/fp32"}
    image = _image(out)
    assert image.shape == reference.shape and image.std() > 5  # a real image, not a blank one
    assert int(np.abs(image - reference).max()) <= MAX_LEVELS


@pytest.mark.slow
def test_third_party_format_converts_plans_and_runs(cli, tiny_factory, plugin_site, plugin_env, reference, tmp_path):
    import edge_sdk

    bundle = tmp_path / "tiny-ronnx.bundle"
    # Converted here (torch is warm in this process), found through the plugin's entry points.
    with _plugin_on_sys_path(plugin_site):
        edge_sdk.convert(tiny_factory, bundle, formats="ronnx", precisions="fp32", name="tiny")
    manifest = json.loads((bundle / "manifest.json").read_text())
    (art,) = manifest["components"]["denoiser"]["artifacts"]
    assert art["format"] == "ronnx" and art["entry"].endswith(".ronnx")
    assert art["validation"]["runtime"] == "ronnxrt"  # validated by the plugin's own runtime
    assert not list(bundle.rglob("*.onnx"))  # no ONNX file a built-in adapter could open instead
    board = _user_board(tmp_path, "ronnxrt")
    out = tmp_path / "ronnx.png"
    got = _run(cli, bundle, out, "--board", str(board), env=plugin_env)
    assert got["plan"] == {"denoiser": "ronnxrt:ronnx/fp32"}
    # The converter exported the same seeded model as the reference bundle (same tolerance as above).
    image = _image(out)
    assert image.shape == reference.shape and image.std() > 5
    assert int(np.abs(image - reference).max()) <= MAX_LEVELS


def _open(path: Path):
    from edge_sdk.bundle import Bundle

    return Bundle.open(path)
