"""PyTorch reference adapter: host only, for validation and cross-runtime checks.

Runs a ``torch.export`` program saved as ``.pt2``, or a live ``nn.Module`` handed in
``options['module']`` (the path is then only a label). torch is imported inside functions so that
registering this adapter never pulls torch into a device process.
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from edge_sdk.errors import InferenceError, InputError, ModelFileError, RuntimeUnavailableError, UsageError
from edge_sdk.manifest import TensorSpec
from edge_sdk.runtimes.base import Runtime

_DTYPES = {"float32": "float32", "float16": "float16", "int64": "int64", "int32": "int32", "uint8": "uint8",
           "bool": "bool", "bfloat16": "float32"}


def _torch():
    try:
        import torch
    except ImportError as e:
        raise RuntimeUnavailableError(f"torch is not installed ({e})",
                                      hint="the torch reference runs on the host: "
                                           "pip install 'edge-sdk[convert]'") from None
    return torch


class TorchReferenceRuntime(Runtime):
    """Options: ``module`` (an nn.Module to run instead of loading ``path``), ``inputs`` (list of
    TensorSpec or (name, dtype, shape) for a module), ``output_names``."""

    name = "torch"
    formats = ("pt2",)
    devices = ("auto", "cpu")
    install_hint = "pip install 'edge-sdk[convert]' (host only: the torch reference is for validation)"
    plannable = False
    host_only = True

    @classmethod
    def probe(cls) -> dict[str, Any]:
        # Found, not imported: probing (doctor, default_plan) must never pull torch into a device process.
        try:
            found = importlib.util.find_spec("torch") is not None
        except (ImportError, ValueError):  # torch blocked, or a broken half-import
            found = False
        if not found:
            return {"available": False, "reason": "host only; torch is not installed", "version": None, "devices": []}
        try:
            ver = version("torch")
        except PackageNotFoundError:
            ver = None
        return {"available": True, "reason": "host only: a reference for validation, not for devices",
                "version": ver, "devices": ["cpu"]}

    def _open(self) -> None:
        torch = _torch()
        if self.device not in self.devices:
            raise UsageError(f"the torch reference runs on the CPU only, not {self.device!r}")
        if self.threads:
            torch.set_num_threads(int(self.threads))
        module = self.options.get("module")
        if module is not None:
            if not isinstance(module, torch.nn.Module):
                raise UsageError(f"options['module'] must be a torch.nn.Module, got {type(module).__name__}")
            self._fn = module.eval()
            specs = self.options.get("inputs")
            if not specs:
                raise UsageError("the torch reference needs options['inputs'] (names, dtypes, shapes) with a module")
            self.inputs = [s if isinstance(s, TensorSpec) else TensorSpec(s[0], s[1], tuple(s[2])) for s in specs]
            n_out = len(self.options.get("output_names") or ["output_0"])
        else:
            if not self.path.is_file():
                raise ModelFileError(f"torch reference: {self.path} does not exist")
            try:
                ep = torch.export.load(str(self.path))
            except Exception as e:  # torch raises many types for a bad archive
                raise ModelFileError(f"torch cannot load {self.path} as a torch.export program: "
                                     f"{str(e).splitlines()[0][:300] if str(e) else type(e).__name__}",
                                     hint="save it with "
                                          "torch.export.save(torch.export.export(model, args), path)") from None
            self._fn = ep.module()
            self.inputs = _program_inputs(ep)
            n_out = len(ep.graph_signature.user_outputs)
        names = self.options.get("output_names") or [f"output_{i}" for i in range(n_out)]
        self.outputs = [TensorSpec(n, "float32", ("dynamic",)) for n in names]
        self._output_names = list(names)

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Specs of an exported program hold the example shapes; only names and dtypes are binding.
        expected = [s.name for s in self.inputs]
        if sorted(feeds) != sorted(expected):
            raise InputError(f"torch reference {self.path.name}: inputs {sorted(feeds)} "
                             f"do not match {sorted(expected)}")
        return {k: np.ascontiguousarray(feeds[k]) for k in expected}

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = _torch()
        args = [torch.from_numpy(np.array(feeds[s.name], copy=True)) for s in self.inputs]
        try:
            with torch.inference_mode():
                out = self._fn(*args)
        except Exception as e:
            raise InferenceError(f"torch reference failed on {self.path.name}: "
                                 f"{str(e).splitlines()[0][:300] if str(e) else type(e).__name__}") from None
        outs = out if isinstance(out, (tuple, list)) else [out]
        return {n: o.detach().float().numpy() for n, o in zip(self._output_names, outs, strict=False)}

    def close(self) -> None:
        self._fn = None


def _program_inputs(ep) -> list[TensorSpec]:
    """User inputs of an ExportedProgram with dtypes and example shapes from its placeholders."""
    torch = _torch()
    user = list(ep.graph_signature.user_inputs)
    nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    specs = []
    for name in user:
        val = nodes[name].meta.get("val") if name in nodes else None
        if isinstance(val, torch.Tensor):
            dtype = _DTYPES.get(str(val.dtype).replace("torch.", ""), "float32")
            shape = tuple(int(d) if isinstance(d, int) else "dynamic" for d in val.shape)
        else:
            dtype, shape = "float32", ("dynamic",)
        specs.append(TensorSpec(name, dtype, shape))
    return specs
