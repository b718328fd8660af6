"""An example third-party runtime: a stack of dense layers saved as ``.npz``, run with numpy.

A real plugin (RKNN, Hailo, native TensorRT) has the same shape: import the engine inside
functions, say in ``probe`` whether it is usable here and why not, fill ``inputs``/``outputs`` in
``_open``, return every output by name from ``_run``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from edge_sdk.errors import InferenceError, ModelFileError, UsageError
from edge_sdk.manifest import TensorSpec
from edge_sdk.runtimes.base import Runtime


class NpyLinearRuntime(Runtime):
    """Runs ``y = tanh(... tanh(x @ W0 + b0) ...) @ Wn + bn`` from arrays W0, b0, W1, b1, ... in a .npz."""

    name = "npylinear"
    formats = ("npz",)
    devices = ("auto", "cpu")

    @classmethod
    def probe(cls) -> dict[str, Any]:
        try:
            ver = version("edge-sdk-npylinear")
        except PackageNotFoundError:
            ver = None
        return {"available": True, "reason": "", "version": ver, "devices": ["cpu"]}

    def _open(self) -> None:
        if self.device not in self.devices:
            raise UsageError(f"npylinear runs on the CPU only, not {self.device!r}")
        try:
            with np.load(self.path, allow_pickle=False) as z:  # never unpickle a model file
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise ModelFileError(f"npylinear cannot read {self.path}: {e}") from None
        n = len(arrays) // 2
        try:
            self._layers = [(arrays[f"W{i}"].astype(np.float32), arrays[f"b{i}"].astype(np.float32)) for i in range(n)]
        except KeyError as e:
            raise ModelFileError(f"npylinear model {self.path.name} lacks array {e}") from None
        if not self._layers:
            raise ModelFileError(f"npylinear model {self.path.name} has no layers")
        self.inputs = [TensorSpec("x", "float32", ("batch", int(self._layers[0][0].shape[0])))]
        self.outputs = [TensorSpec("y", "float32", ("batch", int(self._layers[-1][0].shape[1])))]

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        h = feeds["x"]
        try:
            for i, (w, b) in enumerate(self._layers):
                h = h @ w + b
                if i < len(self._layers) - 1:
                    h = np.tanh(h)
        except ValueError as e:
            raise InferenceError(f"npylinear failed on {self.path.name}: {e}") from None
        return {"y": h.astype(np.float32)}
