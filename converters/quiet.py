"""Exporter chatter off while converting: the CLI owns the terminal.

torch.export, the dynamo ONNX exporter and transformers' tracing warn through ``warnings`` and
``logging`` about things a user cannot act on (torchvision ops not registered, TracerWarnings,
deprecations inside torch); litert-torch, ai-edge-quantizer and NNCF print their own progress
bars on stdout and stderr. A real failure still raises and is reported by the converter with its
own message; ``EDGE_SDK_VERBOSE=1`` lets everything through for debugging an export.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator

_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript", "absl", "nncf")


@contextlib.contextmanager
def quiet_exporters() -> Iterator[None]:
    if os.environ.get("EDGE_SDK_VERBOSE"):
        yield
        return
    loggers = [logging.getLogger(n) for n in _LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=False):
                lg.setLevel(level)
