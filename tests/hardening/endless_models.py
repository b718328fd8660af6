"""Model graphs that never terminate, one per engine format, for the class-7 tests.

Each takes the tiny denoiser's inputs (``sample`` [batch, 3, H, W], ``timestep`` [batch]) and
names its output ``noise_pred``, so it can replace the denoiser inside a real bundle:

- ONNX: a Loop with no trip count whose condition stays true (ONNX Runtime runs it forever);
- OpenVINO IR: that ONNX graph read by OpenVINO and saved with ``openvino.save_model``: a
  ``Loop`` op in the .xml, which the CPU plugin runs forever;
- TFLite: a flatbuffer written with LiteRT's own schema classes: a ``WHILE`` whose condition
  subgraph computes ``0 < 1`` and whose body adds 0, which the LiteRT interpreter runs forever.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path


def never_ending_onnx():
    import onnx
    from onnx import TensorProto
    from onnx import helper as h

    body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"]), h.make_node("Identity", ["x_in"], ["x_out"])], "forever",
        [h.make_tensor_value_info("i", TensorProto.INT64, []),
         h.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         h.make_tensor_value_info("x_in", TensorProto.FLOAT, None)],
        [h.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         h.make_tensor_value_info("x_out", TensorProto.FLOAT, None)])
    # timestep * 0 is added at the end so every engine keeps both inputs (OpenVINO prunes unused ones).
    graph = h.make_graph(
        [h.make_node("Constant", [], ["go"], value=h.make_tensor("go", TensorProto.BOOL, [], [True])),
         h.make_node("Constant", [], ["zero"], value=h.make_tensor("zero", TensorProto.FLOAT, [], [0.0])),
         h.make_node("Loop", ["", "go", "sample"], ["looped"], body=body),
         h.make_node("ReduceSum", ["timestep"], ["t_sum"], keepdims=0),
         h.make_node("Mul", ["t_sum", "zero"], ["t_zero"]),
         h.make_node("Add", ["looped", "t_zero"], ["noise_pred"])],
        "never_ends",
        [h.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", 3, "height", "width"]),
         h.make_tensor_value_info("timestep", TensorProto.FLOAT, ["batch"])],
        [h.make_tensor_value_info("noise_pred", TensorProto.FLOAT, ["batch", 3, "height", "width"])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def never_ending_ir(xml_path: Path) -> None:
    """The ONNX graph as an OpenVINO IR (``xml_path`` and its .bin)."""
    import openvino as ov

    model = ov.Core().read_model(never_ending_onnx().SerializeToString())
    assert any(op.get_type_name() in ("Loop", "TensorIterator") for op in model.get_ops())
    ov.save_model(model, str(xml_path), compress_to_fp16=False)


def long_straight_ir(xml_path: Path, layers: int = 200) -> None:
    """An OpenVINO IR with no loop that runs for seconds on one thread: ``layers`` x (256x1024 @
    1024x1024, tanh) on input ``x`` (one shared weight). OpenVINO's cancel() is checked between nodes."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([256, 1024], np.float32, name="x")
    w = ops.constant(np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32) * 0.03)
    y = x
    for _ in range(layers):
        y = ops.tanh(ops.matmul(y, w, False, False))
    y.output(0).get_tensor().set_names({"y"})
    ov.save_model(ov.Model([y], [x], "long"), str(xml_path), compress_to_fp16=False)


def never_ending_tflite() -> bytes:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    def tensor(name, shape, ttype=s.TensorType.FLOAT32, buffer=0, signature=None):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer, t.shapeSignature = name, list(shape), ttype, buffer, signature
        return t

    def op(code, ins, outs, options_type=0, options=None):
        o = s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code, ins, outs
        o.builtinOptionsType, o.builtinOptions = options_type, options
        return o

    def opcode(builtin):
        c = s.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = builtin, min(builtin, 127), 1
        return c

    def buffer(data: bytes = b""):
        b = s.BufferT()
        b.data = list(data) or None
        return b

    def subgraph(name, tensors, ops, inputs, outputs):
        g = s.SubGraphT()
        g.name, g.tensors, g.operators, g.inputs, g.outputs = name, tensors, ops, inputs, outputs
        return g

    def tmap(name, index):
        m = s.TensorMapT()
        m.name, m.tensorIndex = name, index
        return m

    img, img_sig = [1, 3, 1, 1], [-1, 3, -1, -1]  # batch, height and width resizable
    loop = s.WhileOptionsT()
    loop.condSubgraphIndex, loop.bodySubgraphIndex = 1, 2
    main = subgraph("main", [tensor("sample", img, signature=img_sig), tensor("timestep", [1], signature=[-1]),
                             tensor("noise_pred", img, signature=img_sig)],
                    [op(0, [0], [2], s.BuiltinOptions.WhileOptions, loop)], [0, 1], [2])
    cond = subgraph("cond", [tensor("x", img, signature=img_sig), tensor("zero", [], buffer=1),
                             tensor("one", [], buffer=2), tensor("go", [], s.TensorType.BOOL)],
                    [op(1, [1, 2], [3])], [0], [3])  # 0 < 1: always true
    body = subgraph("body", [tensor("x", img, signature=img_sig), tensor("zero", [], buffer=1),
                             tensor("y", img, signature=img_sig)],
                    [op(2, [0, 1], [2], s.BuiltinOptions.AddOptions, s.AddOptionsT())], [0], [2])
    sig = s.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = "serving_default", 0
    sig.inputs, sig.outputs = [tmap("sample", 0), tmap("timestep", 1)], [tmap("noise_pred", 2)]
    model = s.ModelT()
    model.version, model.description = 3, "a WHILE that never ends"
    model.operatorCodes = [opcode(s.BuiltinOperator.WHILE), opcode(s.BuiltinOperator.LESS),
                           opcode(s.BuiltinOperator.ADD)]
    model.subgraphs, model.signatureDefs = [main, cond, body], [sig]
    model.buffers = [buffer(), buffer(struct.pack("<f", 0.0)), buffer(struct.pack("<f", 1.0))]
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def hanging_bundle(tiny_bundle: Path, dst: Path, reseal, edit_manifest, *, every_format: bool = True) -> Path:
    """A copy of the tiny (denoiser-only) bundle whose denoiser never ends: ONNX (onnxruntime,
    openvino), and with ``every_format`` also OpenVINO IR and TFLite, sealed as a bundle author would."""
    shutil.copytree(tiny_bundle, dst)
    comp = dst / "denoiser"
    (comp / "onnx/fp32/model.onnx").write_bytes(never_ending_onnx().SerializeToString())
    if every_format:
        (comp / "openvino/fp32").mkdir(parents=True)
        never_ending_ir(comp / "openvino/fp32/model.xml")
        (comp / "tflite/fp32").mkdir(parents=True)
        (comp / "tflite/fp32/model.tflite").write_bytes(never_ending_tflite())

        def add(m: dict) -> None:
            arts = m["components"]["denoiser"]["artifacts"]
            for fmt, files in (("openvino", ["model.xml", "model.bin"]), ("tflite", ["model.tflite"])):
                rels = [f"denoiser/{fmt}/fp32/{f}" for f in files]
                arts.append({"format": fmt, "precision": "fp32", "entry": rels[0],
                             "files": [{"path": r, "sha256": "0" * 64, "size": 0} for r in rels]})

        edit_manifest(dst, add)
    reseal(dst)
    return dst
