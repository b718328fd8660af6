"""`edge-sdk export triton`: checked structurally with Triton's own ModelConfig protobuf
(tritonclient's model_config_pb2). Not run against a real Triton server here (none installable
from PyPI on this machine): the configs parse, match the bundle's and the model files' own
signatures, and the files are the bundle's, byte for byte."""

from __future__ import annotations

import json

import pytest

from edge_sdk.bundle import Bundle
from edge_sdk.errors import UsageError
from edge_sdk.guard.fsutil import sha256_file
from edge_sdk.serve.triton import TRITON_TYPES, export_triton, parse_config


def check_repository(repo, bundle: Bundle, backend: str) -> None:
    summary = json.loads((repo / "edge-sdk-export.json").read_text())
    assert set(summary["models"]) == set(bundle.components)
    for name in bundle.components:
        cfg = parse_config(repo / name / "config.pbtxt")
        assert cfg.name == name and cfg.backend == backend and cfg.max_batch_size == 0
        ins, outs = bundle.signature(name)
        for got, want in ((cfg.input, ins), (cfg.output, outs)):
            assert [t.name for t in got] == [t.name for t in want]
            for g, w in zip(got, want, strict=False):
                assert list(g.dims) == [d if isinstance(d, int) and d > 0 else -1 for d in w.shape]
                from tritonclient.grpc import model_config_pb2

                assert model_config_pb2.DataType.Name(g.data_type) == TRITON_TYPES[w.dtype]
        entry = repo / name / "1" / cfg.default_model_filename
        assert entry.is_file()
        for f in summary["models"][name]["files"]:
            assert sha256_file(repo / f["path"]) == f["sha256"]


@pytest.mark.slow
def test_onnxruntime_repository(serve_bundle, tmp_path, cli):
    out = tmp_path / "repo"
    r = cli("export", "triton", str(serve_bundle), str(out), "--json")
    assert r.returncode == 0, r.stderr
    b = Bundle.open(serve_bundle)
    check_repository(out, b, "onnxruntime")
    # The copied file is the bundle's (same sha256 as the manifest) and its own signature is the config's.
    import onnxruntime as ort

    cfg = parse_config(out / "denoiser" / "config.pbtxt")
    sess = ort.InferenceSession(str(out / "denoiser" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [t.name for t in cfg.input]
    rec = b.manifest["components"]["denoiser"]["artifacts"][0]["files"][0]
    assert sha256_file(out / "denoiser" / "1" / "model.onnx") == rec["sha256"]


@pytest.mark.slow
def test_refuses_existing_output_and_missing_artifacts(serve_bundle, tmp_path, cli):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("not edge-sdk's")
    r = cli("export", "triton", str(serve_bundle), str(out))
    assert r.returncode == 2 and "not an empty folder" in r.stderr
    assert (out / "mine.txt").read_text() == "not edge-sdk's" and len(list(out.iterdir())) == 1
    with pytest.raises(UsageError, match="no openvino/fp32 artifact"):
        export_triton(serve_bundle, tmp_path / "ov", backend="openvino")
    assert not (tmp_path / "ov").exists() and not list(tmp_path.glob(".ov.tmp-*"))


@pytest.mark.slow
def test_openvino_repository(tiny_factory, tmp_path_factory):
    import edge_sdk

    work = tmp_path_factory.mktemp("ovtriton")
    b = edge_sdk.convert(tiny_factory, work / "tiny.bundle", formats="openvino", precisions="fp32", name="tiny")
    out = work / "repo"
    export_triton(b, out, backend="openvino")
    check_repository(out, b, "openvino")
    cfg = parse_config(out / "denoiser" / "config.pbtxt")
    assert cfg.default_model_filename == "model.xml" and (out / "denoiser" / "1" / "model.bin").is_file()
    assert cfg.instance_group[0].kind == cfg.instance_group[0].KIND_CPU
