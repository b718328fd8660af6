"""Turning an exporter's failure into "op X at node Y is not expressible in format Z"."""

from __future__ import annotations

import re

from edge_sdk.errors import ConversionError, UnsupportedOpError

# Exporters name the failing operator in different spellings: aten::foo, aten.foo.default,
# torch.ops.aten.foo, an ONNX/TFLite op type in quotes. The first match is the operator.
_OP_PATTERNS = (
    re.compile(r"\b(aten(?:::|\.)[A-Za-z_][A-Za-z0-9_]*)(?:\.[A-Za-z_]+)?"),
    re.compile(r"\b(torch\.ops\.[A-Za-z_]+\.[A-Za-z_][A-Za-z0-9_]*)"),
    re.compile(r"(?:operator|op|Op|operation)\s+['\"`]?([A-Za-z_][A-Za-z0-9_.:]*)['\"`]?"
               r"\s+(?:is\s+)?(?:not supported|unsupported)"),
    re.compile(r"[Uu]nsupported (?:op|operator|operation)s?[^A-Za-z0-9_]+['\"`]?([A-Za-z_][A-Za-z0-9_.:]*)"),
    re.compile(r"No conversion rule found for operations?:?\s*([A-Za-z_][A-Za-z0-9_.:]*)"),
)
_NODE_PATTERNS = (
    re.compile(r"[Nn]ode\s+['\"`%]?([A-Za-z_][A-Za-z0-9_./:]*)"),
    re.compile(r"%([A-Za-z_][A-Za-z0-9_]*)\s*[:=]"),
)
_UNSUPPORTED_HINTS = ("unsupported", "not supported", "no conversion rule", "no decomposition", "not implemented",
                      "cannot be lowered", "lowering not found", "failed to legalize", "no symbolic function",
                      "is not registered", "not found in registry")


def first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(e).__name__


def find_op(text: str) -> tuple[str | None, str | None]:
    """(operator, node) named in an exporter's message, either may be None."""
    op = next((m.group(1) for p in _OP_PATTERNS if (m := p.search(text))), None)
    node = next((m.group(1) for p in _NODE_PATTERNS if (m := p.search(text))), None)
    return op, node


def locate_node(component, op: str) -> str | None:
    """The torch.export node computing ``op`` in ``component`` ('linalg_det in encoder.block.1')."""
    import torch

    short = op.replace("::", ".").split(".")[1 if op.startswith(("aten", "torch")) else 0].lstrip("_")
    if op.startswith("torch.ops."):
        short = op.split(".")[3].lstrip("_")
    try:
        ep = torch.export.export(component.module, tuple(component.example_inputs.values()), strict=False)
    except Exception:  # noqa: BLE001 - only a nicer message is lost
        return None
    for n in ep.graph.nodes:
        if n.op != "call_function":
            continue
        target = str(n.target).replace("aten.", "").split(".")[0].lstrip("_")
        if target == short:
            stack = n.meta.get("nn_module_stack") or {}
            where = list(stack.values())[-1][0] if stack else ""
            return n.name + (f" in {where}" if where else "")
    return None


def conversion_failure(e: BaseException, *, role: str, fmt: str, stage: str, component=None) -> ConversionError:
    """An UnsupportedOpError when the message names an op the format lacks, else a ConversionError."""
    text = str(e)
    low = text.lower()
    op, node = find_op(text)
    if op and node is None and component is not None and any(h in low for h in _UNSUPPORTED_HINTS):
        node = locate_node(component, op)
    if op and any(h in low for h in _UNSUPPORTED_HINTS):
        err = UnsupportedOpError(f"{role}: {fmt} cannot express operator {op}"
                                 + (f" (node {node})" if node else "") + f" [{stage}]")
        err.op, err.node, err.format = op, node, fmt  # type: ignore[attr-defined]
        return err
    err2 = ConversionError(f"{role}: {fmt} {stage} failed: {first_line(e)}")
    err2.format = fmt  # type: ignore[attr-defined]
    return err2
