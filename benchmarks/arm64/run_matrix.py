"""Device side of scripts/arm64-check: generate with every runtime/format/precision of the bundles.

Runs with edge-sdk's device side only (no torch): on the x86 host for the reference images and in
the emulated ARM userland for the ones compared against them. For each bundle, each runtime
(onnxruntime on the ONNX artifacts, litert/XNNPACK on the TFLite ones) that is installed and each
precision that all the bundle's components have: one image at a fixed seed, prompt/class, steps
and thread count, saved as ``IMAGES/<bundle>-<runtime>-<precision>.npy`` (NHWC uint8), with the
load and generate times. ``--cold`` also measures, in a fresh interpreter per runtime, the time
from ``import edge_sdk`` to the first image of the fp32 demo bundle.

    python run_matrix.py BUNDLES_DIR OUT_DIR [--cold] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

RUNTIMES = {"onnxruntime": "onnx", "litert": "tflite"}
STEPS = 4
REQUESTS = {"demo": dict(class_labels=[3], steps=STEPS), "text": dict(prompt="a red cat sitting on a mat", steps=STEPS)}

COLD = """
import sys, time
t0 = time.perf_counter()
import edge_sdk
g = edge_sdk.load(sys.argv[1], runtime=sys.argv[2], format=sys.argv[3], precision="fp32", threads=int(sys.argv[4]))
g.generate(seed=0, **{req})
print(time.perf_counter() - t0)
"""


def cases(bundle_dir: Path) -> list[tuple[str, str, str, str]]:
    from edge_sdk.bundle import Bundle
    from edge_sdk.runtimes.registry import available_runtimes

    installed = {n for n, i in available_runtimes().items() if i.get("available")}
    out = []
    for name in REQUESTS:
        path = bundle_dir / f"{name}.bundle"
        if not path.is_dir():
            continue
        b = Bundle.open(path)
        for runtime, fmt in RUNTIMES.items():
            if runtime not in installed:
                continue
            precs = None
            for comp in b.components:
                have = {a.precision for a in b.artifacts(comp) if a.format == fmt and not a.variant}
                precs = have if precs is None else precs & have
            for prec in sorted(precs or (), key=("fp32", "fp16", "int8-weight", "int8-static").index):
                out.append((name, runtime, fmt, prec))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cold", action="store_true")
    args = ap.parse_args(argv)
    t_import = time.perf_counter()
    import numpy as np

    import edge_sdk
    from edge_sdk.runtimes.registry import available_runtimes

    import_s = time.perf_counter() - t_import
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    rts = available_runtimes()
    report = {"machine": platform.machine(), "python": platform.python_version(), "import_s": round(import_s, 2),
              "threads": args.threads, "steps": STEPS, "torch_importable": _has("torch"),
              "runtimes": {n: i.get("version") for n, i in rts.items() if i.get("available")}, "cases": []}
    for name, runtime, fmt, prec in cases(args.bundles):
        case = {"bundle": name, "runtime": runtime, "format": fmt, "precision": prec}
        t = time.perf_counter()
        try:
            with edge_sdk.load(args.bundles / f"{name}.bundle", runtime=runtime, format=fmt, precision=prec,
                               threads=args.threads) as g:
                case["load_s"] = round(time.perf_counter() - t, 2)
                t = time.perf_counter()
                res = g.generate(seed=0, **REQUESTS[name])
                case["generate_s"] = round(time.perf_counter() - t, 2)
            np.save(args.out / "images" / f"{name}-{runtime}-{prec}.npy", res.images)
            case["image_shape"] = list(res.images.shape)
            case["ok"] = True
        except Exception as e:  # noqa: BLE001 - the report says what failed and goes on
            case.update(ok=False, error=f"{type(e).__name__}: {e}"[:500])
        print(json.dumps(case), flush=True)
        report["cases"].append(case)
    if args.cold:
        report["cold_start_s"] = {}
        for runtime, fmt in RUNTIMES.items():
            if not rts.get(runtime, {}).get("available"):
                continue
            code = COLD.replace("{req}", repr(REQUESTS["demo"]))
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", code, str(args.bundles / "demo.bundle"), runtime, fmt,
                                str(args.threads)], capture_output=True, text=True)
            wall = time.perf_counter() - t
            report["cold_start_s"][runtime] = ({"import_to_first_image": round(float(r.stdout.split()[-1]), 2),
                                                "process_wall": round(wall, 2)} if r.returncode == 0
                                               else {"error": r.stderr[-400:]})
            print(runtime, report["cold_start_s"][runtime], flush=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    return 0


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.exit(main())
