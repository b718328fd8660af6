"""Family x format table: each hub-layout test folder (tests/families/conftest.py) converted to
ONNX, OpenVINO and LiteRT fp32, then generated with that format against ONNX's image.

    python benchmarks/family_formats.py [--families sd2,sdxl] [--formats openvino,litert] [--out DIR]

Prints one JSON line per (family, format): converts (the convert, with its validation against
PyTorch, succeeded), validates (worst validation rel L2 of the artifacts), generates (a default
run finished), rel_l2_vs_onnx (that run's image against the ONNX bundle's), seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="sd2,sd-turbo,sdxl,sdxl-turbo,lcm,unet2d,unet2d-class")
    ap.add_argument("--formats", default="onnx,openvino,litert")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("family_fixtures", REPO / "tests" / "families" / "conftest.py")
    fx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fx)
    import edge_sdk

    work = Path(args.out or tempfile.mkdtemp(prefix="family-formats-"))
    work.mkdir(parents=True, exist_ok=True)
    for family in args.families.split(","):
        folder = fx._folders()[family](work / "folders")
        kw = {} if family.startswith("unet2d") else {"prompt": "a lighthouse at dusk"}
        onnx_image = None
        for fmt in args.formats.split(","):
            row: dict = {"family": family, "format": fmt, "converts": False, "generates": False}
            t0 = time.perf_counter()
            try:
                b = edge_sdk.convert(folder, work / f"{family}-{fmt}.bundle", formats=fmt, precisions="fp32",
                                     components=fx._components(folder), overwrite=True)
                row["converts"] = True
                row["validates"] = max(float(a.validation["rel_l2"]) for c in b.components
                                       for a in b.artifacts(c))
                with edge_sdk.load(b.root, format=fmt) as g:
                    img = g.generate(seed=0, steps=2, **kw).raw
                row["generates"] = True
                if fmt == "onnx":
                    onnx_image = img
                elif onnx_image is not None:
                    row["rel_l2_vs_onnx"] = float(np.linalg.norm(img - onnx_image) / np.linalg.norm(onnx_image))
            except Exception as e:  # noqa: BLE001 - a table row per failure
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            row["seconds"] = round(time.perf_counter() - t0, 1)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    sys.exit(main())
