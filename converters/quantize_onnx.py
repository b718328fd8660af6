"""ONNX fp16 and int8 from an fp32 export: onnxruntime's own tools, inputs and outputs kept float32.

fp16: ``onnxruntime.transformers.float16`` (keep_io_types, so the pipeline feeds the same arrays).
int8-static: ``onnxruntime.quantization.quantize_static`` in QDQ form, per-channel weights, calibrated
on the component's sampling-trajectory inputs. int8-weight: int8 per-channel weights behind
DequantizeLinear, activations float. onnxruntime's weight-only tools (MatMulNBits) cover MatMul
only, and its dynamic quantization turns Conv into ConvInteger, measured 1.4-3x slower than fp32
(benchmarks/int8_check.py), so the conv-heavy denoisers and VAEs need this small pass of our own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_sdk.errors import ConversionError

_PROTO_LIMIT = 2 * 1024**3 - 1
# Activations quantized: the compute-heavy ops only. Norms, softmax and reshapes stay float, which
# also keeps the quantizer off the shape constants and shared weights of dynamo-exported graphs.
# Gemm stays float too: in these models it is the 2-D timestep / class embedding MLP, negligible
# work, whose rounding shifts every channel of every block. Measured on the trained demo denoiser
# (benchmarks/int8_check.py): with Gemm quantized 1.52x faster than fp32 at 27.8 dB final-image
# PSNR; without, 1.76x at 33.6 dB. Attention's activation x activation MatMuls stay float as well
# (_activation_matmuls).
_INT8_OPS = ("Conv", "ConvTranspose", "MatMul")
# Weights smaller than this stay float: their bytes do not matter and biases of norms are touchy.
_MIN_WEIGHT_ELEMENTS = 256
# Embedding tables quantized per row from this size: token tables (CLIP's 37.9M), not position
# tables (77 x 768), whose bytes do not matter.
_MIN_TABLE_ELEMENTS = 1 << 20
# A Conv or MatMul weight whose float form is larger than this is quantized in slices of output
# channels, each behind its own DequantizeLinear, and the outputs concatenated: ONNX Runtime
# dequantizes a weight whole before the op runs, so the largest float weight sets the floor of a
# streamed part. SD 1.5's 2560->1280 3x3 conv is 118 MB as float (benchmarks/RESULTS.md, issue 16).
_SLICE_BYTES = 16 * 2**20


def _save(model, path: Path) -> None:
    import onnx

    large = model.ByteSize() > _PROTO_LIMIT // 2 if hasattr(model, "ByteSize") else False
    if large:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data")
    else:
        onnx.save_model(model, str(path))


def to_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    from edge_sdk.converters.precision_guard import onnx_timestep_nodes

    graph = onnx.load(str(src), load_external_data=False)  # the nodes only, for the timestep path
    # By path, not as a loaded model: the tool then infers shapes with infer_shapes_path (a temporary
    # file beside src, in the convert's own folder), which takes models over protobuf's 2 GB limit;
    # given a ModelProto it serializes it whole and a full-size UNet (3.4 GB) fails.
    model16 = convert_float_to_float16(str(src), keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST),
                                       node_block_list=onnx_timestep_nodes(graph))
    _drop_cast_round_trips(model16)
    _save(model16, dst)


def _drop_cast_round_trips(model) -> int:
    """Remove fp32 -> fp16 -> fp32 Cast pairs the float16 tool leaves between kept-fp32 nodes.

    Each such pair rounds a value that was meant to stay fp32 (the timestep embedding's angle);
    dropping it is exact. Returns how many were dropped.
    """
    import onnx

    g = model.graph
    producer = {o: n for n in g.node for o in n.output}

    def cast_to(n) -> int | None:
        return next((a.i for a in n.attribute if a.name == "to"), None) if n.op_type == "Cast" else None

    graph_outputs = {o.name for o in g.output}
    rename: dict[str, str] = {}
    for n in g.node:
        if cast_to(n) != onnx.TensorProto.FLOAT:
            continue
        first = producer.get(n.input[0])
        if first is None or cast_to(first) != onnx.TensorProto.FLOAT16 or n.output[0] in graph_outputs:
            continue
        src = first.input[0]
        src_node = producer.get(src)
        # Only when the value was fp32 before the first cast (a graph input, initializer or fp32 op).
        if src_node is not None and src_node.op_type == "Cast" and cast_to(src_node) != onnx.TensorProto.FLOAT:
            continue
        rename[n.output[0]] = src
    for n in g.node:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    # Casts whose outputs nobody reads any more go.
    used = {i for n in g.node for i in n.input} | graph_outputs
    keep = [n for n in g.node if n.op_type != "Cast" or any(o in used for o in n.output)]
    while len(keep) != len(g.node):
        del g.node[:]
        g.node.extend(keep)
        used = {i for n in g.node for i in n.input} | graph_outputs
        keep = [n for n in g.node if n.op_type != "Cast" or any(o in used for o in n.output)]
    return len(rename)


def _int8_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 rows of a 2-D table and their scales as a [rows, 1] column (per-row, symmetric)."""
    scale = np.abs(table).max(axis=1, keepdims=True) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    return np.clip(np.round(table / scale), -127, 127).astype(np.int8), scale


def to_int8_weight(src: Path, dst: Path) -> int:
    """Quantize Conv/ConvTranspose/MatMul/Gemm weights to int8 per output channel, and large
    embedding tables (Gather on axis 0) per row; returns the count."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    done: dict[str, str] = {}
    new_nodes = []
    after: dict[int, list] = {}  # nodes to insert after the node of this position
    replace: dict[int, list] = {}  # nodes that take the place of the node of this position
    users: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    rows_done: set[str] = set()  # embedding tables quantized per row (their float table may stay for others)
    for pos, node in enumerate(g.node):
        if node.op_type == "Gather" and _gather_table(node, inits):
            # A token-embedding table (CLIP's: 49408 x 768, 152 MB fp32) stays int8 in memory:
            # the rows a prompt picks are gathered as int8, with their scales, and scaled to fp32.
            table = inits[node.input[0]]
            qname, sname = f"{table.name}_int8_rows", f"{table.name}_row_scale"
            if table.name not in rows_done:  # a table shared by several Gathers is quantized once
                q, scale = _int8_rows(numpy_helper.to_array(table))
                g.initializer.extend([numpy_helper.from_array(q, qname), numpy_helper.from_array(scale, sname)])
                rows_done.add(table.name)
            out, ids = node.output[0], node.input[1]
            node.input[0], node.output[0] = qname, f"{out}_int8"
            after[pos] = [
                helper.make_node("Gather", [sname, ids], [f"{out}_scale"], name=f"{node.name}_row_scale", axis=0),
                helper.make_node("Cast", [f"{out}_int8"], [f"{out}_int8_f"], name=f"{node.name}_cast",
                                 to=onnx.TensorProto.FLOAT),
                helper.make_node("Mul", [f"{out}_int8_f", f"{out}_scale"], [out], name=f"{node.name}_scale"),
            ]
            continue
        if node.op_type not in ("Conv", "ConvTranspose", "MatMul", "Gemm") or len(node.input) < 2:
            continue
        wname = node.input[1]
        if wname in done:
            node.input[1] = done[wname]
            continue
        init = inits.get(wname)
        if init is None or init.data_type != onnx.TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(init)
        if w.size < _MIN_WEIGHT_ELEMENTS or w.ndim < 2:
            continue
        if node.op_type == "Conv":
            axis = 0
        elif node.op_type == "ConvTranspose":
            axis = 1
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            axis = 0 if trans_b else 1
        else:
            axis = w.ndim - 1
        q, scale = _int8_channels(w, axis)
        slices = _slices(node, w, axis, inits, users[wname])
        if slices > 1:
            replace[pos] = _sliced(node, q, scale, axis, slices, inits, g)
            done[wname] = ""  # no other node reads it (_slices checked)
            continue
        qname, sname, zname, dqname = (f"{wname}_int8", f"{wname}_scale", f"{wname}_zero_point", f"{wname}_dq")
        g.initializer.extend([numpy_helper.from_array(q, qname), numpy_helper.from_array(scale, sname),
                              numpy_helper.from_array(np.zeros(scale.shape, np.int8), zname)])
        new_nodes.append(helper.make_node("DequantizeLinear", [qname, sname, zname], [dqname],
                                          name=f"{wname}_DequantizeLinear", axis=axis))
        done[wname] = dqname
        node.input[1] = dqname
    if not done and not rows_done:
        raise ConversionError(f"{src.name}: no Conv/MatMul/Gemm weights to quantize to int8")
    # The float weights replaced (and the whole biases of sliced ops) go, unless another node reads them.
    gone = set(done) | rows_done | {g.node[pos].input[2] for pos in replace if len(g.node[pos].input) > 2}
    # DequantizeLinear nodes depend on initializers only, so putting them first keeps topological order.
    nodes = list(new_nodes)
    for pos, node in enumerate(g.node):
        nodes.extend(replace.get(pos, [node]))
        nodes.extend(after.get(pos, ()))
    del g.node[:]
    g.node.extend(nodes)
    still_used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [i for i in g.initializer if i.name not in gone or i.name in still_used]
    del g.initializer[:]
    g.initializer.extend(keep)
    _save(model, dst)
    return len(done) + len(rows_done)


def _int8_channels(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """int8 weights per channel along ``axis`` and their scales (symmetric)."""
    other = tuple(i for i in range(w.ndim) if i != axis)
    scale = np.abs(w).max(axis=other) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    return np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8), scale


def _slices(node, w: np.ndarray, axis: int, inits: dict, users: int) -> int:
    """How many output-channel slices a weight is quantized in (1: whole). Only a plain Conv (one
    group, its bias an initializer or absent) or a 2-D MatMul, read by this node alone."""
    if w.nbytes <= _SLICE_BYTES or users != 1:
        return 1
    if node.op_type == "Conv":
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        if groups != 1 or axis != 0 or (len(node.input) > 2 and node.input[2] and node.input[2] not in inits):
            return 1
    elif not (node.op_type == "MatMul" and w.ndim == 2 and axis == 1):
        return 1
    n = -(-w.nbytes // _SLICE_BYTES)
    return min(n, w.shape[axis])


def _sliced(node, q: np.ndarray, scale: np.ndarray, axis: int, n: int, inits: dict, g) -> list:
    """The nodes that compute ``node`` in ``n`` slices of output channels, each behind its own
    DequantizeLinear, concatenated on the output's channel axis (1 for Conv, last for MatMul).
    The same arithmetic per output channel: each slice's dot products are the whole op's."""
    from onnx import helper, numpy_helper

    wname, out = node.input[1], node.output[0]
    bounds = np.linspace(0, q.shape[axis], n + 1).astype(int)
    bias = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] else None
    nodes, outs = [], []
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        pre = f"{wname}_slice{k}"
        g.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(np.take(q, range(a, b), axis=axis)),
                                                      f"{pre}_int8"),
                              numpy_helper.from_array(scale[a:b], f"{pre}_scale"),
                              numpy_helper.from_array(np.zeros(b - a, np.int8), f"{pre}_zero_point")])
        nodes.append(helper.make_node("DequantizeLinear", [f"{pre}_int8", f"{pre}_scale", f"{pre}_zero_point"],
                                      [f"{pre}_dq"], name=f"{pre}_DequantizeLinear", axis=axis))
        ins = [node.input[0], f"{pre}_dq"]
        if bias is not None:
            g.initializer.append(numpy_helper.from_array(bias[a:b], f"{pre}_bias"))
            ins.append(f"{pre}_bias")
        part = helper.make_node(node.op_type, ins, [f"{out}_slice{k}"], name=f"{node.name}_slice{k}")
        part.attribute.extend(node.attribute)
        nodes.append(part)
        outs.append(f"{out}_slice{k}")
    nodes.append(helper.make_node("Concat", outs, [out], name=f"{node.name}_concat", axis=1 if axis == 0 else -1))
    return nodes


def _gather_table(node, inits: dict) -> bool:
    """Whether a Gather reads rows (axis 0) of a float 2-D initializer of embedding size."""
    import onnx

    table = inits.get(node.input[0]) if node.input else None
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return (table is not None and table.data_type == onnx.TensorProto.FLOAT and len(table.dims) == 2
            and axis == 0 and int(np.prod(table.dims)) >= _MIN_TABLE_ELEMENTS)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of input dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - used by some calibrators
        pass


def to_int8_static(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], *, work_dir: Path) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work_dir / "pre_quant.onnx"
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    except Exception:  # noqa: BLE001 - preprocessing is an optimisation; quantize the plain export
        pre = src
    try:
        _quantize(pre, dst, feeds)
    except Exception:  # noqa: BLE001
        if pre == src:
            raise
        # The preprocessed graph can trip the quantizer (e.g. "shared mode is not supported for
        # weight" after fusions) or give a graph ORT refuses; the plain export is the fallback.
        _quantize(src, dst, feeds)


def _activation_matmuls(model) -> list[str]:
    """MatMul nodes with no constant operand: attention's QK^T and AV.

    Quantizing those puts a QuantizeLinear on both sides of Softmax and turns each into a
    QLinearMatMul over activations; measured 2.8x slower per UNet call than fp32 on a VNNI CPU
    (benchmarks/RESULTS.md), so they stay float and only weight-bearing ops become int8.
    """
    g = model.graph
    const = {i.name for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    passthrough = ("Transpose", "Reshape", "Cast", "Identity", "Unsqueeze", "Squeeze")

    def is_const(name: str, depth: int = 0) -> bool:
        if name in const:
            return True
        n = producer.get(name)
        if n is None or depth > 8:
            return False
        if n.op_type == "Constant":
            return True
        return n.op_type in passthrough and bool(n.input) and is_const(n.input[0], depth + 1)

    return [n.name for n in g.node if n.op_type == "MatMul" and not any(is_const(i) for i in n.input)]


def _quantize(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from edge_sdk.converters.precision_guard import onnx_timestep_nodes

    large = os.path.getsize(src) > _PROTO_LIMIT // 2
    graph = onnx.load(str(src), load_external_data=False)
    exclude = onnx_timestep_nodes(graph) + _activation_matmuls(graph)
    quantize_static(str(src), str(dst), _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                    # U8 activations / S8 weights: the fast path of x86 VNNI and ARM dot-product kernels.
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, use_external_data_format=large,
                    nodes_to_exclude=exclude, op_types_to_quantize=list(_INT8_OPS),
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])  # refuses a broken QDQ graph here
