"""A small MLServer custom runtime: serves one ONNX component of an edge-sdk bundle.

It runs inside MLServer's own virtual environment (not the project's), and appends what every
request carried (input names, dtypes, shapes and the full tensor values as JSON) to the file named
by the model's ``log`` parameter, so the tests can check that nothing but tensors ever arrived.
"""

import os

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxComponent(MLModel):
    async def load(self) -> bool:
        extra = self.settings.parameters.extra or {}
        self.log_path = extra.get("log")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(self.settings.parameters.uri, opts, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {inp.name: NumpyCodec.decode_input(inp) for inp in payload.inputs}
        if self.log_path:
            with open(self.log_path, "a") as f:  # one JSON line per request: everything received
                f.write(payload.model_dump_json() + "\n")
                f.flush()
                os.fsync(f.fileno())
        outs = self.session.run(None, {k: np.ascontiguousarray(v) for k, v in feeds.items()})
        return InferenceResponse(model_name=self.name, id=payload.id,
                                 outputs=[NumpyCodec.encode_output(n, a) for n, a in zip(self.output_names, outs, strict=False)])
