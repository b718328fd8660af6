"""LiteRT adapter: ``ai_edge_litert``'s interpreter, or ``tflite_runtime``'s with the same code.

Runs through the model's signature runner, so inputs are called by the signature's names (our
converter exports with keyword inputs, so those are the bundle's names). Models whose signature
uses positional names (``args_0``...) are mapped to ``options['input_names']`` by position, and
outputs to ``options['output_names']``. Delegates (Edge TPU, GPU, ...) load from a shared-library
path. Every file passes a flatbuffer bounds check before the native interpreter sees it.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from edge_sdk.errors import InferenceError, InputError, ModelFileError, RuntimeUnavailableError, UsageError
from edge_sdk.manifest import TensorSpec
from edge_sdk.runtimes.base import MB, Runtime, first_line
from edge_sdk.runtimes.tflite_check import verify_tflite


def _interpreter_module():
    """(module with Interpreter and load_delegate, package name, version)."""
    try:
        from ai_edge_litert import interpreter as mod

        return mod, "ai-edge-litert", _version("ai-edge-litert")
    except ImportError as first:
        try:
            from tflite_runtime import interpreter as mod  # same API on boards where ai-edge-litert has no wheel

            return mod, "tflite-runtime", _version("tflite-runtime")
        except ImportError:
            raise RuntimeUnavailableError(f"neither ai-edge-litert nor tflite-runtime is installed ({first})",
                                          hint="pip install 'edge-sdk[litert]' (or tflite-runtime on armv7)") from None


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


class LiteRtRuntime(Runtime):
    """Options: ``delegates`` (list of shared-library paths, or {path: {option: value}}),
    ``signature`` (signature key; default the first), ``input_names`` / ``output_names`` (the
    bundle's names, mapped by position when the model's signature uses others)."""

    name = "litert"
    formats = ("tflite",)
    devices = ("auto", "cpu", "delegate")
    base_memory = 45 * MB  # Python 3.11 + numpy + LiteRT, measured here
    install_hint = "pip install 'edge-sdk[litert]' (or tflite-runtime on older ARM boards)"
    module = "ai_edge_litert"
    rank = 30

    @classmethod
    def probe(cls) -> dict[str, Any]:
        try:
            _, pkg, ver = _interpreter_module()
        except RuntimeUnavailableError as e:
            return {"available": False, "reason": e.message, "version": None, "devices": []}
        return {"available": True, "reason": "", "version": ver, "package": pkg,
                "devices": ["cpu", "delegate (options['delegates'])"]}

    def _delegates(self, mod) -> list[Any]:
        spec = self.options.get("delegates") or []
        if isinstance(spec, (str, os.PathLike)):
            spec = [spec]
        items = spec.items() if isinstance(spec, dict) else [(p, None) for p in spec]
        out = []
        for path, opts in items:
            try:
                out.append(mod.load_delegate(str(path), opts))
            except (ValueError, OSError, RuntimeError) as e:
                raise RuntimeUnavailableError(
                    f"litert cannot load the delegate {path}: {str(e).strip().splitlines()[0] if str(e) else e}",
                    hint="install the delegate library (e.g. libedgetpu1-std for the Edge TPU) or drop it") from None
        if self.device == "delegate" and not out:
            raise UsageError("litert device 'delegate' needs options['delegates'] = [path to the delegate .so]")
        return out

    def _open(self) -> None:
        mod, _, _ = _interpreter_module()
        if self.device not in self.devices:
            raise UsageError(f"litert has no device {self.device!r}",
                             hint="devices: cpu, or 'delegate' with options['delegates']")
        verify_tflite(self.path)
        delegates = self._delegates(mod)
        data = self.verified_bytes(self.path)
        kwargs: dict[str, Any] = {"model_content": data} if data is not None else {"model_path": str(self.path)}
        if delegates:
            kwargs["experimental_delegates"] = delegates
        if self.threads:
            kwargs["num_threads"] = int(self.threads)
        try:
            self._interp = mod.Interpreter(**kwargs)
            sigs = self._interp.get_signature_list()
        except (ValueError, RuntimeError) as e:
            raise ModelFileError(f"litert cannot load {self.path}: {first_line(e)}",
                                 hint="the file is corrupt or uses ops this runtime lacks; convert it again") from None
        if not sigs:
            raise ModelFileError(f"litert model {self.path.name} has no signature",
                                 hint="convert it with edge-sdk (litert-torch writes a 'serving_default' signature)")
        key = self.options.get("signature") or next(iter(sigs))
        if key not in sigs:
            raise UsageError(f"litert model {self.path.name} has no signature {key!r}",
                             hint=f"it has: {', '.join(sigs)}")
        self._runner = self._interp.get_signature_runner(key)
        in_det, out_det = self._runner.get_input_details(), self._runner.get_output_details()
        # Keep the signature's own order: the interpreter's dicts follow the model's tensor order.
        in_sig, out_sig = list(sigs[key]["inputs"]), list(sigs[key]["outputs"])
        in_names = _rename(in_sig, self.options.get("input_names"), "input", self.path.name)
        out_names = _rename(out_sig, self.options.get("output_names"), "output", self.path.name)
        self._in_map = dict(zip(in_names, in_sig, strict=False))  # ours -> signature's
        self._out_map = dict(zip(out_names, out_sig, strict=False))
        self.inputs = [TensorSpec(n, np.dtype(in_det[s]["dtype"]).name, _dims(in_det[s]))
                       for n, s in self._in_map.items()]
        self.outputs = [TensorSpec(n, np.dtype(out_det[s]["dtype"]).name, _dims(out_det[s]))
                        for n, s in self._out_map.items()]
        self._resizable = {s: _resizable(in_det[s]) for s in in_sig}

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # The signature runner resizes inputs and re-allocates tensors itself when a shape
        # changes (resize_tensor_input + allocate_tensors); unchanged shapes cost nothing.
        try:
            res = self._runner(**{self._in_map[k]: v for k, v in feeds.items()})
        except (ValueError, RuntimeError) as e:
            shapes = {k: v.shape for k, v in feeds.items()}
            if not all(self._resizable.values()):
                raise InputError(f"litert model {self.path.name} could not take inputs of shapes {shapes}: "
                                 f"{first_line(e)}",
                                 hint="this .tflite was converted for fixed shapes; convert it for the size you "
                                      "need") from None
            raise InferenceError(f"litert failed running {self.path.name}: {first_line(e)}") from None
        return {ours: np.array(res[sig], copy=True) for ours, sig in self._out_map.items()}

    def close(self) -> None:
        self._runner = None
        self._interp = None


def _rename(sig_names: list[str], ours: list[str] | None, kind: str, fname: str) -> list[str]:
    """Our name for each signature name (same order as ``sig_names``)."""
    if not ours or set(ours) == set(sig_names):
        return sig_names
    ours = list(ours)
    if len(ours) != len(sig_names):
        raise ModelFileError(f"litert model {fname} has {len(sig_names)} {kind}s {sig_names}, the bundle lists "
                             f"{len(ours)} {ours}", hint="the artifact does not belong to this component")
    # Positional names (args_0, args_1, ..., output_0) may come back in string order: 10 before 2.
    nums = [re.fullmatch(r"[a-z_]*?_?(\d+)", n) for n in sig_names]
    order = sorted(range(len(sig_names)), key=lambda i: int(nums[i].group(1))) if all(nums) else range(len(sig_names))
    mapped = [""] * len(sig_names)
    for pos, i in enumerate(order):
        mapped[i] = ours[pos]
    return mapped


def _dims(det: dict[str, Any]) -> tuple[int | str, ...]:
    sig = det.get("shape_signature")
    shape = sig if sig is not None and len(sig) else det["shape"]
    return tuple(int(d) if d >= 0 else "dynamic" for d in shape)


def _resizable(det: dict[str, Any]) -> bool:
    sig = det.get("shape_signature")
    return sig is not None and any(d < 0 for d in sig)
