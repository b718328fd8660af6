"""Our runtime layer behind ONNX's backend interface (``onnx.backend.base.Backend``).

This lets ONNX's own conformance suite (``onnx.backend.test``) run through exactly the code path a
bundle takes: the model is written to a file and opened with ``open_artifact`` on a registered
runtime, then fed through ``Runtime.run``. Host/test tooling: needs the ``onnx`` package.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from edge_sdk.formats.onnx import FORMAT as ONNX
from edge_sdk.runtimes.base import Runtime
from edge_sdk.runtimes.registry import get_runtime, open_artifact


class RuntimeBackendRep(BackendRep):
    """A prepared model: one open runtime session; ``run`` takes inputs by position or name."""

    def __init__(self, runtime: Runtime, workdir: str) -> None:
        self.runtime = runtime
        self._cleanup = weakref.finalize(self, _close_and_remove, runtime, workdir)

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            specs = self.runtime.inputs
            if len(inputs) != len(specs):
                raise ValueError(f"{len(inputs)} inputs given, the model takes {len(specs)}")
            feeds = {s.name: np.asarray(x) for s, x in zip(specs, inputs, strict=False)}
        out = self.runtime.run(feeds)
        return tuple(out[o.name] for o in self.runtime.outputs)


def _close_and_remove(runtime: Runtime, workdir: str) -> None:
    runtime.close()
    shutil.rmtree(workdir, ignore_errors=True)


def backend_for(runtime: str, *, device: str = "cpu", options: dict[str, Any] | None = None) -> type[Backend]:
    """An ``onnx.backend.base.Backend`` class that runs models on the registered ``runtime``."""
    cls = get_runtime(runtime)
    if ONNX.name not in cls.formats:
        raise ValueError(f"runtime {runtime!r} does not open ONNX files (formats: {', '.join(cls.formats)})")

    class RuntimeBackend(Backend):
        @classmethod
        def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> RuntimeBackendRep:
            super().prepare(model, device, **kwargs)  # onnx.checker on the model
            workdir = tempfile.mkdtemp(prefix=f"edge-sdk-{runtime}-backend-")
            path = os.path.join(workdir, "model.onnx")
            onnx.save_model(model, path)
            try:
                rt = open_artifact(path, runtime, device=_device, options=dict(_options))
            except BaseException:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
            return RuntimeBackendRep(rt, workdir)

        @classmethod
        def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any):
            return cls.prepare(model, device, **kwargs).run(inputs)

        @classmethod
        def supports_device(cls, device: str) -> bool:
            return Device(device).type == DeviceType.CPU

    _device, _options = device, dict(options or {})
    RuntimeBackend.__name__ = RuntimeBackend.__qualname__ = f"{cls.__name__}Backend"
    return RuntimeBackend
