"""A runtime adapter written against edge-sdk's public Runtime interface only: ONNX Runtime's
Python API used directly, CPU only, the verified bytes handed to the engine."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_sdk.manifest import TensorSpec
from edge_sdk.runtimes.base import NUMPY_DTYPES, Runtime


class OrtWrapRuntime(Runtime):
    name = "ortwrap"
    formats = ("onnx",)
    devices = ("auto", "cpu")
    install_hint = "pip install edge-sdk-example-plugin onnxruntime"
    base_memory = 60 * 1024 * 1024

    @classmethod
    def probe(cls) -> dict[str, Any]:
        try:
            import onnxruntime
        except ImportError as e:
            return {"available": False, "reason": str(e), "version": None, "devices": []}
        return {"available": True, "reason": "", "version": onnxruntime.__version__, "devices": ["cpu"]}

    def _open(self) -> None:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
        model = self.verified_bytes(self.path)
        self._session = onnxruntime.InferenceSession(model if model is not None else str(self.path), opts,
                                                     providers=["CPUExecutionProvider"])
        self.inputs = [TensorSpec(i.name, NUMPY_DTYPES[i.type], tuple(d if isinstance(d, int) else str(d)
                                                                       for d in i.shape))
                       for i in self._session.get_inputs()]
        self.outputs = [TensorSpec(o.name, NUMPY_DTYPES[o.type], tuple(d if isinstance(d, int) else str(d)
                                                                        for d in o.shape))
                        for o in self._session.get_outputs()]

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.outputs]
        return dict(zip(names, self._session.run(names, feeds), strict=True))

    @property
    def active_device(self) -> str:
        return "ortwrap:CPUExecutionProvider"

    def close(self) -> None:
        self._session = None
