"""Each runtime adapter on real converted artifacts: signatures, numbers against torch, options, errors.

Numerical bar: fp32 artifacts differ from PyTorch only by kernel summation order, ~1e-6 relative
L2 on this model; 1e-5 leaves room for a different SIMD path and still catches any real error
(a wrong input order or a bf16 path is >= 1e-3).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_sdk.errors import InputError, ModelFileError, RuntimeUnavailableError, UsageError
from edge_sdk.runtimes.registry import get_runtime, open_artifact

FP32_REL = 1e-5


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def feeds(tiny_torch):
    _, ex = tiny_torch
    rng = np.random.default_rng(3)
    return {"sample": rng.standard_normal((1, 3, 32, 32)).astype(np.float32),
            "timestep": np.array([321.0], np.float32)}


@pytest.fixture(scope="module")
def reference(tiny_torch, feeds):
    model, _ = tiny_torch
    with torch.no_grad():
        return model(*(torch.from_numpy(v) for v in feeds.values())).numpy()


# -- every adapter, same model ---------------------------------------------------------------------
@pytest.mark.parametrize("runtime,fmt", [("onnxruntime", "onnx"), ("openvino", "openvino"), ("openvino", "onnx"),
                                         ("litert", "tflite")])
def test_adapter_matches_torch(runtime, fmt, tri_paths, feeds, reference):
    with open_artifact(tri_paths[fmt], runtime, threads=1) as rt:
        assert [t.name for t in rt.inputs] == ["sample", "timestep"]
        assert [t.dtype for t in rt.inputs] == ["float32", "float32"]
        assert rt.inputs[0].shape[1] == 3
        out = rt.run(feeds)
        assert list(out) == [rt.outputs[0].name]
        got = out[rt.outputs[0].name]
        assert got.shape == (1, 3, 32, 32) and got.dtype == np.float32
        assert rel_l2(got, reference) < FP32_REL
        # A second run on the same session gives the same numbers, and does not overwrite the first result.
        first = got.copy()
        rt.run({"sample": feeds["sample"] * 0.5, "timestep": feeds["timestep"]})
        np.testing.assert_array_equal(got, first)
        np.testing.assert_array_equal(rt.run(feeds)[rt.outputs[0].name], first)


@pytest.mark.parametrize("runtime,fmt", [("onnxruntime", "onnx"), ("openvino", "openvino"), ("litert", "tflite")])
def test_wrong_feeds_are_input_errors(runtime, fmt, tri_paths, feeds):
    with open_artifact(tri_paths[fmt], runtime) as rt:
        with pytest.raises(InputError, match="do not match"):
            rt.run({"sample": feeds["sample"]})
        with pytest.raises(InputError, match="dtype float64"):
            rt.run({**feeds, "sample": feeds["sample"].astype(np.float64)})
        with pytest.raises(InputError, match="rank"):
            rt.run({**feeds, "sample": feeds["sample"][0]})
        with pytest.raises(InputError, match="axis 1 must be 3"):
            rt.run({**feeds, "sample": np.zeros((1, 4, 32, 32), np.float32)})


# -- ONNX Runtime ----------------------------------------------------------------------------------
def test_ort_threads_and_graph_levels(tri_paths, feeds, reference):
    with open_artifact(tri_paths["onnx"], "onnxruntime", threads=1, options={"graph_optimization": "disable"}) as rt:
        so = rt._session.get_session_options()
        assert so.intra_op_num_threads == 1
        assert rt.active_device == "CPUExecutionProvider"
        assert rt._binding is None  # CPU: plain run, no IO binding (see the module docstring)
        assert rel_l2(rt.run(feeds)["noise_pred"], reference) < FP32_REL
    with pytest.raises(UsageError, match="graph_optimization 'fastest'"):
        open_artifact(tri_paths["onnx"], "onnxruntime", options={"graph_optimization": "fastest"})


def test_ort_workers_stop_spinning_after_each_run_in_every_plan(tri_paths, feeds, reference):
    """Every plan asks ONNX Runtime to stop its workers' spinning as a run returns (plan_options), and
    DeepCache's chained sessions ask it too (chained_options); spinning within a run is untouched."""
    from edge_sdk.runtimes.registry import chained_options, plan_options

    assert plan_options("onnxruntime")["spin_after_run"] is False
    assert chained_options("onnxruntime") == {"spin_after_run": False}
    def entry(so, key):
        try:
            return so.get_session_config_entry(key)
        except RuntimeError:  # not set: ORT's default
            return None

    for opts, want in ((plan_options("onnxruntime"), "1"), ({}, None)):
        with open_artifact(tri_paths["onnx"], "onnxruntime", threads=1, options=opts) as rt:
            so = rt._session.get_session_options()
            assert entry(so, "session.force_spinning_stop") == want
            assert entry(so, "session.intra_op.allow_spinning") is None  # ORT's default: spins within a run
            assert rel_l2(rt.run(feeds)["noise_pred"], reference) < FP32_REL


def test_ort_missing_provider_says_what_to_install(tri_paths):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(RuntimeUnavailableError, match="CUDAExecutionProvider") as e:
        open_artifact(tri_paths["onnx"], "onnxruntime", device="cuda")
    assert "onnxruntime-gpu" in e.value.hint
    with pytest.raises(UsageError, match="no device 'npu'"):
        open_artifact(tri_paths["onnx"], "onnxruntime", device="npu")


def test_ort_refuses_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf model\n" * 20)
    with pytest.raises(ModelFileError, match="bad.onnx"):
        open_artifact(bad, "onnxruntime")
    with pytest.raises(ModelFileError, match="does not exist"):
        open_artifact(tmp_path / "none.onnx", "onnxruntime")


# -- OpenVINO --------------------------------------------------------------------------------------
def test_ov_runs_f32_on_cpu_and_threads(tri_paths):
    with open_artifact(tri_paths["openvino"], "openvino", device="cpu", threads=1, options={"cache_dir": False}) as rt:
        assert np.dtype(rt._compiled.get_property("INFERENCE_PRECISION_HINT").to_dtype()) == np.float32
        assert int(rt._compiled.get_property("INFERENCE_NUM_THREADS")) == 1
        assert rt.active_device == "CPU"


def test_ov_bf16_hint_drifts_which_is_why_f32_is_default(tri_paths, feeds, reference):
    from edge_sdk.measure.doctor import cpu_info

    if not {"avx512_bf16", "amx"} & set(cpu_info()["features"]):
        pytest.skip("this CPU has no bf16 path: OpenVINO runs f32 anyway")
    with open_artifact(tri_paths["openvino"], "openvino", options={"inference_precision": "bf16",
                                                                    "cache_dir": False}) as rt:
        err = rel_l2(rt.run(feeds)["noise_pred"], reference)
    # bf16 keeps 8 significant bits (~4e-3 relative per value): far over the fp32 bar.
    assert err > 1e-3, err


def test_ov_compiled_model_cache(tri_paths, feeds, tmp_path):
    cache = tmp_path / "ovcache"
    with open_artifact(tri_paths["openvino"], "openvino", options={"cache_dir": str(cache)}) as rt:
        first = rt.run(feeds)["noise_pred"]
    blobs = sorted(p.name for p in cache.rglob("*") if p.is_file())
    assert blobs and any(p.stat().st_size > 10_000 for p in cache.rglob("*.blob")), blobs
    with open_artifact(tri_paths["openvino"], "openvino", options={"cache_dir": str(cache)}) as rt:
        np.testing.assert_array_equal(rt.run(feeds)["noise_pred"], first)
    # The second start reused the blob instead of writing another one.
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == blobs


def test_ov_caches_small_models_only_on_the_cpu_by_default(tri_paths, feeds, reference, monkeypatch, tmp_path):
    """With ``cache_dir`` unset, a CPU compile goes through the cache only for a model up to
    ``cpu_cache_max_bytes`` (a cache hit holds the source beside the imported blob); an explicit
    ``cache_dir`` or False decides regardless of size."""
    from edge_sdk.runtimes.openvino import OpenVinoRuntime

    with open_artifact(tri_paths["openvino"], "openvino", device="cpu", threads=1) as rt:
        size = rt._weight_bytes()
        assert size == sum(f.stat().st_size for f in (tri_paths["openvino"], tri_paths["openvino"].with_suffix(".bin")))
        assert "CACHE_DIR" in rt._config("CPU")
        monkeypatch.setattr(OpenVinoRuntime, "cpu_cache_max_bytes", size - 1)
        assert "CACHE_DIR" not in rt._config("CPU") and "CACHE_DIR" in rt._config("GPU")
        rt.options["cache_dir"] = str(tmp_path / "forced")
        assert rt._config("CPU")["CACHE_DIR"] == rt.options["cache_dir"]
        rt.options["cache_dir"] = False
        assert "CACHE_DIR" not in rt._config("GPU")
    monkeypatch.setattr(OpenVinoRuntime, "cpu_cache_max_bytes", 0)
    with open_artifact(tri_paths["openvino"], "openvino", device="cpu", threads=1) as rt:  # compiled uncached
        assert rel_l2(rt.run(feeds)["noise_pred"], reference) < FP32_REL


def test_ov_static_reshape(tri_paths, tiny_torch):
    model, _ = tiny_torch
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    t = np.array([10.0], np.float32)
    with open_artifact(tri_paths["openvino"], "openvino", options={
            "static_shapes": {"sample": [1, 3, 16, 16], "timestep": [1]}, "cache_dir": False}) as rt:
        assert rt.inputs[0].shape == (1, 3, 16, 16)
        with torch.no_grad():
            ref = model(torch.from_numpy(x), torch.from_numpy(t)).numpy()
        assert rel_l2(rt.run({"sample": x, "timestep": t})["noise_pred"], ref) < FP32_REL
        with pytest.raises(InputError, match="axis 2 must be 16"):
            rt.run({"sample": np.zeros((1, 3, 32, 32), np.float32), "timestep": t})
    with pytest.raises(UsageError, match="not inputs"):
        open_artifact(tri_paths["openvino"], "openvino", options={"static_shapes": {"latent": [1, 4, 8, 8]}})


@pytest.mark.slow
def test_ov_per_shape_compiles_once_per_fed_shape(tri_paths, tiny_torch):
    """static_shapes='per_shape': a static compile per distinct input shapes, cached; numbers as fp32."""
    model, _ = tiny_torch
    t = np.array([10.0], np.float32)
    xs = [np.random.default_rng(k).standard_normal((1, 3, n, n)).astype(np.float32) for k, n in ((1, 16), (2, 32))]
    with open_artifact(tri_paths["openvino"], "openvino", threads=1,
                       options={"static_shapes": "per_shape", "cache_dir": False}) as rt:
        assert rt.inputs[0].shape[2] == "dynamic"  # described by the model as read until fed
        for x in xs + xs:
            with torch.no_grad():
                ref = model(torch.from_numpy(x), torch.from_numpy(t)).numpy()
            assert rel_l2(rt.run({"sample": x, "timestep": t})["noise_pred"], ref) < FP32_REL
            assert rt._compiled.inputs[0].get_partial_shape().is_static
        assert len(rt._per_shape) == 2  # the second pass reused both compiles
    with pytest.raises(UsageError, match="per_shape"):
        open_artifact(tri_paths["openvino"], "openvino", options={"static_shapes": "sometimes"})


def test_ov_per_shape_holds_no_source_model_and_reads_again_verified(tri_paths, tiny_torch, tmp_path):
    """Per shape, opened from verified records: the model as read goes after its first compile (it
    held the file's weights beside the compiled copy), a new shape reads the files again and checks
    them against their records, and the weights were read into an OpenVINO tensor (no bytes copy).
    Numbers as fp32 (FP32_REL) on both shapes; a changed .bin is refused at the re-read."""
    import hashlib

    from edge_sdk.errors import IntegrityError

    model, _ = tiny_torch
    xml = tmp_path / "model.xml"
    for suffix in (".xml", ".bin"):
        shutil.copy(tri_paths["openvino"].with_suffix(suffix), xml.with_suffix(suffix))
    records = [(f, f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest())
               for f in (xml, xml.with_suffix(".bin"))]
    t = np.array([10.0], np.float32)
    rt = open_artifact(xml, "openvino", threads=1, verified=records,
                       options={"static_shapes": "per_shape", "cache_dir": False})
    assert type(rt._buffer_for(xml.with_suffix(".bin"), 8)[0]).__name__ == "Tensor"
    with rt:
        for k, n in ((1, 16), (2, 32)):
            x = np.random.default_rng(k).standard_normal((1, 3, n, n)).astype(np.float32)
            with torch.no_grad():
                ref = model(torch.from_numpy(x), torch.from_numpy(t)).numpy()
            assert rel_l2(rt.run({"sample": x, "timestep": t})["noise_pred"], ref) < FP32_REL
            assert rt._model is None and not rt._bytes  # nothing of the source kept between compiles
            first = rt.run({"sample": x, "timestep": t})["noise_pred"]
            rt.release_scratch()  # intermediate tensors freed, the compiled models kept: same numbers after
            np.testing.assert_array_equal(rt.run({"sample": x, "timestep": t})["noise_pred"], first)
            assert len(rt._per_shape) == k
        data = bytearray(xml.with_suffix(".bin").read_bytes())
        data[-1] ^= 1
        xml.with_suffix(".bin").write_bytes(bytes(data))
        with pytest.raises(IntegrityError, match="changed after the bundle was verified"):
            rt.run({"sample": np.zeros((1, 3, 24, 24), np.float32), "timestep": t})


@pytest.mark.parametrize("device,what", [("npu", "NPU"), ("gpu", "GPU")])
def test_ov_missing_device_says_what_to_install(device, what, tri_paths):
    info = get_runtime("openvino").probe()
    if device in info["devices"]:
        pytest.skip(f"this machine has an OpenVINO {what}")
    with pytest.raises(RuntimeUnavailableError, match=f"device {what} is not available") as e:
        open_artifact(tri_paths["openvino"], "openvino", device=device)
    assert "driver" in e.value.hint or "runtime" in e.value.hint
    with pytest.raises(UsageError, match="no device 'tpu'"):
        open_artifact(tri_paths["openvino"], "openvino", device="tpu")


def test_ov_refuses_corrupt_ir(tri_paths, tmp_path):
    src = tri_paths["openvino"]

    def copy(name: str):
        xml, bin_ = tmp_path / f"{name}.xml", tmp_path / f"{name}.bin"
        shutil.copyfile(src, xml)
        shutil.copyfile(src.with_suffix(".bin"), bin_)
        return xml, bin_

    xml, bin_ = copy("nobin")
    bin_.unlink()
    with pytest.raises(ModelFileError, match="nobin.bin is missing"):
        open_artifact(xml, "openvino")
    xml, bin_ = copy("emptybin")
    bin_.write_bytes(b"")
    with pytest.raises(ModelFileError, match="is empty"):
        open_artifact(xml, "openvino")
    xml, _ = copy("badxml")
    xml.write_bytes(xml.read_bytes()[: len(xml.read_bytes()) // 2])
    with pytest.raises(ModelFileError, match="not valid XML"):
        open_artifact(xml, "openvino")
    xml, _ = copy("notnet")
    xml.write_text("<?xml version='1.0'?><html><body/></html>")
    with pytest.raises(ModelFileError, match="not an OpenVINO <net>"):
        open_artifact(xml, "openvino")
    xml, bin_ = copy("shortbin")
    bin_.write_bytes(bin_.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="openvino cannot"):
        open_artifact(xml, "openvino", options={"cache_dir": False})


# -- LiteRT ----------------------------------------------------------------------------------------
def test_litert_fixed_shape_and_threads(tri_paths, feeds):
    with open_artifact(tri_paths["tflite"], "litert", threads=2) as rt:
        assert rt.inputs[0].shape == (1, 3, 32, 32)  # litert-torch exports fixed shapes
        with pytest.raises(InputError, match="axis 0 must be 1"):
            rt.run({"sample": np.concatenate([feeds["sample"]] * 2), "timestep": np.repeat(feeds["timestep"], 2)})


def test_litert_positional_signature_mapped_to_bundle_names(tmp_path):
    """A .tflite exported with positional args (args_0, args_1) exposes the bundle's names by position."""
    import litert_torch

    class Two(torch.nn.Module):
        def forward(self, a, b):
            return a * 2.0 - b

    a, b = torch.randn(1, 4), torch.randn(1, 4)
    path = tmp_path / "pos.tflite"
    litert_torch.convert(Two().eval(), (a, b)).export(str(path))
    with open_artifact(path, "litert") as rt:
        assert {t.name for t in rt.inputs} == {"args_0", "args_1"}
    with open_artifact(path, "litert", options={"input_names": ["sample", "timestep"],
                                                "output_names": ["noise_pred"]}) as rt:
        assert [t.name for t in rt.inputs] == ["sample", "timestep"]
        out = rt.run({"sample": a.numpy(), "timestep": b.numpy()})["noise_pred"]
        np.testing.assert_allclose(out, (a * 2.0 - b).numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ModelFileError, match="does not belong"):
        open_artifact(path, "litert", options={"input_names": ["only_one"]})


def test_litert_delegate_errors(tri_paths):
    with pytest.raises(RuntimeUnavailableError, match="cannot load the delegate") as e:
        open_artifact(tri_paths["tflite"], "litert", options={"delegates": ["/nonexistent/libedgetpu.so.1"]})
    assert "libedgetpu" in e.value.hint
    with pytest.raises(UsageError, match="needs options"):
        open_artifact(tri_paths["tflite"], "litert", device="delegate")


def test_litert_refuses_corrupt_files_before_the_interpreter(tri_paths, tmp_path):
    data = tri_paths["tflite"].read_bytes()
    p = tmp_path / "m.tflite"
    p.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelFileError, match="identifier"):
        open_artifact(p, "litert")
    p.write_bytes(data[:4] + b"TFL3" + np.random.default_rng(1).bytes(4096))
    with pytest.raises(ModelFileError, match="not a valid TFLite flatbuffer"):
        open_artifact(p, "litert")
    p.write_bytes(b"TFL3")
    with pytest.raises(ModelFileError, match="too small"):
        open_artifact(p, "litert")
    # Truncated anywhere: every cut is caught by the bounds check (the interpreter never sees it).
    for cut in np.linspace(8, len(data) - 1, 25).astype(int):
        p.write_bytes(data[:cut])
        with pytest.raises(ModelFileError):
            open_artifact(p, "litert")


# -- torch reference -------------------------------------------------------------------------------
def test_torch_reference_pt2_and_module(tiny_torch, feeds, reference, tmp_path):
    model, ex = tiny_torch
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(model, tuple(ex.values())), str(path))
    with open_artifact(path, "torch") as rt:
        assert [(t.name, t.dtype) for t in rt.inputs] == [("sample", "float32"), ("timestep", "float32")]
        # Same kernels as the eager module: agreement to float32 rounding.
        assert rel_l2(rt.run(feeds)["output_0"], reference) < 1e-6
    specs = [("sample", "float32", ["batch", 3, "height", "width"]), ("timestep", "float32", ["batch"])]
    with open_artifact("label-only", "torch", options={"module": model, "inputs": specs,
                                                       "output_names": ["noise_pred"]}) as rt:
        np.testing.assert_array_equal(rt.run(feeds)["noise_pred"], reference)
    info = get_runtime("torch").probe()
    assert info["available"] and "host only" in info["reason"]
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelFileError, match="torch.export program"):
        open_artifact(bad, "torch")


_ALLOCATOR = r"""
import sys, numpy as np
from edge_sdk.runtimes.base import keep_large_buffers_mapped
def rss(): return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])
if sys.argv[1] == "fixed":
    keep_large_buffers_mapped()
a = np.ones(4 << 18, np.float32); del a   # 4 MiB, mapped; its free raises glibc's threshold to 4 MiB
before = rss()
b = np.ones(2 << 18, np.float32); del b   # 2 MiB: on the heap afterwards, unless the threshold is fixed
print(rss() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc (Linux)")
def test_large_buffers_go_back_to_the_os_once_a_runtime_opens(tri_paths):
    """Why every runtime open fixes glibc's mmap threshold: with glibc's dynamic threshold a 2 MiB
    scratch buffer freed after a 4 MiB one stays in the process (2048 kB here); fixed, it goes back
    (< 256 kB: the interpreter's own small allocations in between)."""
    import subprocess
    import sys

    from edge_sdk.runtimes import base

    if base._glibc() is None:
        pytest.skip("not glibc: the threshold is glibc's")
    kept = {mode: int(subprocess.run([sys.executable, "-c", _ALLOCATOR, mode], capture_output=True, text=True,
                                     check=True).stdout) for mode in ("fixed", "dynamic")}
    assert kept["fixed"] < 256 and kept["dynamic"] >= 1024, kept
    with open_artifact(tri_paths["onnx"], "onnxruntime", threads=1):
        assert base._MALLOPT is True  # applied (and accepted by glibc) by the first open
