"""Sub-graphs that must stay float32 in fp16 and int8 artifacts: the timestep embedding.

A denoiser turns its timestep (0..1000) into sin/cos features of ``t * freq``. In fp16, 500 is
held to within 0.25 and the frequencies to 5e-4 relative, so the sine's argument is off by up to
a quarter radian: a tiny UNet measured 3e-2 relative L2 error with it in fp16, 1e-3 without. In
int8 the same angle gets a 4-radian step. So every node between a rank-0/1 float input and the
first Sin/Cos (and the constants feeding them) is kept out of fp16 and int8.
"""

from __future__ import annotations

# Walking stops at these: past a Sin/Cos the values are in [-1, 1]; a layer means the walk has
# left the embedding (a model that feeds the raw timestep into a layer keeps only that path).
_STOP = {"Sin", "Cos", "MatMul", "Gemm", "Conv", "ConvTranspose"}


def onnx_timestep_nodes(model) -> list[str]:
    """Names of the ONNX nodes on the way from 0/1-D float inputs to their Sin/Cos."""
    import onnx

    g = model.graph
    starts = []
    for inp in g.input:
        tt = inp.type.tensor_type
        if tt.elem_type == onnx.TensorProto.FLOAT and len(tt.shape.dim) <= 1:
            starts.append(inp.name)
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    seen: dict[str, object] = {}
    frontier = list(starts)
    while frontier:
        name = frontier.pop()
        for n in consumers.get(name, []):
            if n.name in seen:
                continue
            seen[n.name] = n
            if n.op_type not in _STOP:
                frontier.extend(n.output)
    if not any(n.op_type in ("Sin", "Cos") for n in seen.values()):
        return []
    return list(seen)


def ov_timestep_ops(model) -> list:
    """The OpenVINO ops (and the Constants feeding them) from 0/1-D float inputs to their Sin/Cos."""
    stop = {"Sin", "Cos", "MatMul", "Convolution", "ConvolutionBackpropData"}
    starts = [p.get_node() for p in model.inputs
              if p.get_partial_shape().rank.is_static and p.get_partial_shape().rank.get_length() <= 1
              and p.get_element_type().is_real()]
    seen: dict[str, object] = {}
    frontier = list(starts)
    while frontier:
        node = frontier.pop()
        for out in node.outputs():
            for target in out.get_target_inputs():
                n = target.get_node()
                if n.get_friendly_name() in seen:
                    continue
                seen[n.get_friendly_name()] = n
                if n.get_type_name() not in stop:
                    frontier.append(n)
    if not any(n.get_type_name() in ("Sin", "Cos") for n in seen.values()):
        return []
    consts = {}
    for n in seen.values():
        for v in n.input_values():
            src = v.get_node()
            if src.get_type_name() in ("Constant", "Convert"):
                consts[src.get_friendly_name()] = src
    return list(seen.values()) + list(consts.values())


def tflite_timestep_tensors(model: bytes) -> list[str]:
    """Output tensor names of the TFLite ops from 0/1-D float inputs to their SIN/COS."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)
    names = {t["index"]: t["name"] for t in it.get_tensor_details()}
    starts = {d["index"] for d in it.get_input_details()
              if len(d["shape"]) <= 1 and d["dtype"].__name__.startswith("float")}
    ops = it._get_ops_details()  # no public op list; ai-edge-quantizer reads the same flatbuffer
    stop = {"SIN", "COS", "FULLY_CONNECTED", "CONV_2D", "BATCH_MATMUL", "TRANSPOSE_CONV", "DEPTHWISE_CONV_2D"}
    reached = set(starts)
    found: list[str] = []
    has_trig = False
    changed = True
    while changed:
        changed = False
        for op in ops:
            if any(i in reached for i in op["inputs"]) and not all(o in reached for o in op["outputs"]):
                for o in op["outputs"]:
                    found.append(names.get(o, ""))
                    if op["op_name"] not in stop:
                        reached.add(o)
                    else:
                        reached.add(-1 - o)  # mark visited without walking on
                has_trig = has_trig or op["op_name"] in ("SIN", "COS")
                changed = changed or op["op_name"] not in stop
        # ops whose outputs we stop at are marked by their negated index; avoid reprocessing them
        ops = [op for op in ops if not all((-1 - o) in reached or o in reached for o in op["outputs"])]
    return [n for n in found if n] if has_trig else []
