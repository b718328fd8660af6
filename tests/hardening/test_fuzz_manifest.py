"""Property-based fuzzing of the manifest parser, the bundle opener and the ONNX pre-parser.

Properties: whatever the input, ``manifest.load``/``validate``/``Bundle.open`` and
``modelcheck.check_onnx_file`` either succeed or raise an edge-sdk error (never a KeyError,
TypeError, RecursionError... from inside), and what they accept is usable: every path stays
inside the bundle and the typed views (artifacts, signature) work.

Bounded in CI (``edge-hardening-ci``: a few hundred examples per test). By hand, for a long run:

    HYPOTHESIS_PROFILE=edge-hardening-long pytest tests/hardening/test_fuzz_manifest.py \
        -p no:cacheprovider --hypothesis-show-statistics

(``edge-hardening-long``: 20,000 examples per test, or ``EDGE_SDK_FUZZ_EXAMPLES``; no per-example
deadline.) Each test prints how many cases it ran and how many bundles were accepted/refused.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_sdk import manifest
from edge_sdk.bundle import Bundle
from edge_sdk.errors import BundleError, EdgeSDKError, ModelFileError, UnsafePathError
from edge_sdk.guard.modelcheck import check_onnx_file

settings.register_profile("edge-hardening-ci", max_examples=300, deadline=timedelta(seconds=5),
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                          derandomize=True)
settings.register_profile("edge-hardening-long", max_examples=int(os.environ.get("EDGE_SDK_FUZZ_EXAMPLES", "20000")),
                          deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "edge-hardening-ci")
                               if os.environ.get("HYPOTHESIS_PROFILE", "").startswith("edge-hardening")
                               else "edge-hardening-ci")

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)), max_leaves=30)
# Strings a manifest path field could hold, biased to the dangerous shapes.
paths = st.one_of(st.text(max_size=30), st.sampled_from([
    "../x", "/etc/passwd", "a/../../b", "./a", "a//b", "C:/x", "a\\b", "a\x00b", "denoiser/onnx/fp32/model.onnx",
    "manifest.json", ".", "..", "a/./b", "~/x", "denoiser/../../x"]))


def _set_path(doc, where: list, value) -> None:
    """Set doc[where...] = value, walking dicts and lists; a missing step ends the walk."""
    node = doc
    for step in where[:-1]:
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and -len(node) <= step < len(node):
            node = node[step]
        else:
            return
    last = where[-1]
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and -len(node) <= last < len(node):
        node[last] = value


def _all_paths(doc, prefix=()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _all_paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _all_paths(v, prefix + (i,))
    return out


@st.composite
def mutated_manifests(draw, base: dict):
    """The valid manifest with 1-4 edits: a value replaced (by junk or a nasty path), a key dropped."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        spots = [p for p in _all_paths(doc) if p]
        spot = list(draw(st.sampled_from(spots)))
        action = draw(st.sampled_from(["value", "path", "drop", "huge"]))
        if action == "drop":
            parent = doc
            for s in spot[:-1]:
                parent = parent[s]
            if isinstance(parent, dict):
                parent.pop(spot[-1], None)
        else:
            value = {"value": lambda: draw(json_values), "path": lambda: draw(paths),
                     "huge": lambda: draw(st.sampled_from([2**63, -1, 10**30, "x" * 100_000, [0] * 5000]))}[action]()
            _set_path(doc, spot, value)
    return doc


@pytest.fixture(scope="module")
def base_bundle(tiny_bundle) -> Path:
    return tiny_bundle


def _check_usable(b: Bundle) -> None:
    root = b.root.resolve()
    for comp in b.components:
        b.signature(comp)
        for art in b.artifacts(comp):
            assert str(art.path.resolve()).startswith(str(root) + os.sep)
    for f in manifest.all_files(b.manifest):
        assert not f["path"].startswith("/") and ".." not in f["path"].split("/")


@PROFILE
@given(value=json_values)
def test_validate_takes_any_json_value(value):
    try:
        manifest.validate(value)
    except BundleError:
        pass


@PROFILE
@given(raw=st.one_of(st.binary(max_size=2000), json_values.map(lambda v: json.dumps(v).encode())))
def test_load_takes_any_bytes(raw, tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    (d / "manifest.json").write_bytes(raw)
    try:
        manifest.load(d / "manifest.json")
    except BundleError:
        pass


def test_mutated_manifests_never_escape_or_crash(base_bundle):
    base = json.loads((base_bundle / "manifest.json").read_text())
    work = Path(tempfile.mkdtemp(prefix="fuzz-bundle-"))
    try:
        shutil.copytree(base_bundle, work / "b.bundle")
        outside = work / "outside.onnx"
        outside.write_bytes((base_bundle / "denoiser/onnx/fp32/model.onnx").read_bytes())
        counts = {"accepted": 0, "refused": 0}

        @PROFILE
        @given(doc=mutated_manifests(base))
        def run(doc):
            (work / "b.bundle" / "manifest.json").write_text(json.dumps(doc))
            try:
                b = Bundle.open(work / "b.bundle")
            except EdgeSDKError as e:
                assert isinstance(e, BundleError), f"{type(e).__name__}: {e}"
                counts["refused"] += 1
                return
            _check_usable(b)
            counts["accepted"] += 1

        run()
        print(f"mutated manifests: {counts['accepted'] + counts['refused']} cases, {counts['refused']} refused, "
              f"{counts['accepted']} accepted (all usable, no path outside the bundle)")
        # The edits hit hashes, sizes, paths and required keys; most must be refused.
        assert counts["refused"] > counts["accepted"] >= 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_onnx_preparser_takes_any_mutation(base_bundle):
    model = (base_bundle / "denoiser/onnx/fp32/model.onnx").read_bytes()
    work = Path(tempfile.mkdtemp(prefix="fuzz-onnx-"))
    try:
        target = work / "model.onnx"

        seen = {"cases": 0, "refused": 0}

        @PROFILE
        @given(cut=st.integers(0, len(model)), edits=st.lists(
            st.tuples(st.integers(0, len(model) - 1), st.integers(0, 255)), max_size=8))
        def run(cut, edits):
            data = bytearray(model[:cut] if cut < len(model) - 1 else model)
            for i, v in edits:
                if i < len(data):
                    data[i] = v
            target.write_bytes(bytes(data))
            seen["cases"] += 1
            try:
                check_onnx_file(target)
            except (ModelFileError, UnsafePathError):
                seen["refused"] += 1

        run()
        print(f"ONNX pre-parser: {seen['cases']} cases, {seen['refused']} refused, the rest accepted, 0 other errors")
    finally:
        shutil.rmtree(work, ignore_errors=True)
