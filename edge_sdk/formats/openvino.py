"""OpenVINO IR: a .xml graph plus a .bin of weights with the same name."""

from __future__ import annotations

import os
from pathlib import Path

from edge_sdk.formats.base import FormatSpec


def check(path: str | os.PathLike) -> None:
    """The OpenVINO adapter's IR check (<net> root, .bin present)."""
    from edge_sdk.runtimes.openvino import check_ir_files

    check_ir_files(Path(path))


FORMAT = FormatSpec(name="openvino", suffix=".xml", check=check,
                    converter="edge_sdk.converters.openvino:OpenVinoConverter", aliases=("ov", "ir"), rank=20)
