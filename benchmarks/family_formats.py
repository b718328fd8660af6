"""Family x format x precision table: each hub-layout test folder (tests/families/conftest.py)
converted to ONNX, OpenVINO and LiteRT in each precision, then generated with that artifact
against the ONNX fp32 bundle's image.

    python benchmarks/family_formats.py [--families sd2,sdxl] [--formats openvino,tflite]
        [--precisions fp32,fp16,int8-weight] [--out DIR] [--results FILE.json]

One convert per (family, format) makes every precision (``keep_going``: a precision that fails
is a row with its error, the others still run). Prints one JSON line per (family, format,
precision): converts (the convert, with its validation against PyTorch, succeeded), validates
(worst validation rel L2 of its artifacts), generates (a 2-step default run finished),
rel_l2_vs_onnx_fp32 (that run's final image against the ONNX fp32 bundle's, same seed), seconds
(the convert's share plus the run). The ONNX fp32 image of each family is kept in DIR as .npy, so
formats may run in separate processes after ONNX; ``--results`` merges the rows into a JSON file.
Test dimensions (random weights): this says what converts and runs, not how fast.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FAMILIES = "sd1,sd2,sd-turbo,sdxl,sdxl-turbo,lcm,unet2d,unet2d-class"


def _merge(path: Path, rows: list[dict]) -> None:
    """Rows replace earlier rows of the same (family, format, precision) in the results file."""
    data = json.loads(path.read_text()) if path.is_file() else {"rows": []}
    keys = {(r["family"], r["format"], r["precision"]) for r in rows}
    data["rows"] = [r for r in data["rows"] if (r["family"], r["format"], r["precision"]) not in keys] + rows
    data["rows"].sort(key=lambda r: (r["family"], r["format"], r["precision"]))
    data["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs (shared, contended: timings inflated)"
    data["command"] = "python benchmarks/family_formats.py " + " ".join(sys.argv[1:])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def fill_missing(work: Path, results: Path) -> None:
    """Rows that ran before their family's ONNX fp32 image existed (formats in parallel processes):
    their rel L2 from the images kept in ``work``."""
    data = json.loads(results.read_text())
    for r in data["rows"]:
        img, ref = work / f"{r['family']}-{r['format']}-{r['precision']}.npy", work / f"{r['family']}-onnx-fp32.npy"
        if r.get("generates") and "rel_l2_vs_onnx_fp32" not in r and (r["format"], r["precision"]) != (
                "onnx", "fp32") and img.is_file() and ref.is_file():
            r["rel_l2_vs_onnx_fp32"] = _rel(np.load(img), np.load(ref))
    results.write_text(json.dumps(data, indent=1) + "\n")


def _cell(r: dict | None) -> str:
    """One table cell: validates (worst rel L2 vs PyTorch) / image vs ONNX fp32, or why it failed."""
    if r is None:
        return "not run"
    if not r.get("converts"):
        m = re.search(r"^(\w+): ValidationError: .*relative L2 error ([0-9.e+-]+)", r.get("error", ""))
        return f"no: {m.group(1)} {float(m.group(2)):.2g}" if m else "no: " + r.get("error", "?")[:40]
    img = "ref" if (r["format"], r["precision"]) == ("onnx", "fp32") else (
        f"{r['rel_l2_vs_onnx_fp32']:.1e}" if "rel_l2_vs_onnx_fp32" in r else "-")
    return f"{r['validates']:.1e} / {img}" if r.get("generates") else f"{r['validates']:.1e} / no run"


def table(results: Path) -> str:
    """The results file as a markdown table: a row per family x precision, a column per format."""
    rows = json.loads(results.read_text())["rows"]
    by = {(r["family"], r["format"], r["precision"]): r for r in rows}
    fams = [f for f in FAMILIES.split(",") if any(r["family"] == f for r in rows)]
    fmts = [f for f in ("onnx", "openvino", "tflite") if any(r["format"] == f for r in rows)]
    precs = [p for p in ("fp32", "fp16", "int8-weight", "int8-static") if any(r["precision"] == p for r in rows)]
    out = ["| family | precision | " + " | ".join(fmts) + " |", "|---|---|" + "---|" * len(fmts)]
    for fam in fams:
        for p in precs:
            out.append(f"| {fam} | {p} | " + " | ".join(_cell(by.get((fam, f, p))) for f in fmts) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=FAMILIES)
    ap.add_argument("--formats", default="onnx,openvino,tflite",
                    help="format names or aliases (litert = tflite); rows carry the format's own name")
    ap.add_argument("--precisions", default="fp32,fp16,int8-weight,int8-static")
    ap.add_argument("--out", default=None, help="work folder (folders, bundles, ONNX fp32 images)")
    ap.add_argument("--results", default=None, help="merge the rows into this JSON file")
    ap.add_argument("--fill-missing", action="store_true",
                    help="only fill rows' missing rel L2 from the images in --out, in --results")
    ap.add_argument("--table", action="store_true", help="only print --results as a markdown table")
    args = ap.parse_args()
    if args.table:
        return print(table(Path(args.results)))
    if args.fill_missing:
        return fill_missing(Path(args.out), Path(args.results))
    spec = importlib.util.spec_from_file_location("family_fixtures", REPO / "tests" / "families" / "conftest.py")
    fx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fx)
    import edge_sdk
    from edge_sdk.converters.convert import ConvertReport

    work = Path(args.out or tempfile.mkdtemp(prefix="family-formats-"))
    work.mkdir(parents=True, exist_ok=True)
    from edge_sdk.converters.precision import normalize_all
    from edge_sdk.converters.registry import normalize_format

    precs = normalize_all(args.precisions.split(","))
    # The bundle and `load` know a format by its own name: "litert" converts (an alias) but loads nothing.
    fmts = list(dict.fromkeys(normalize_format(f) for f in args.formats.split(",")))
    for family in args.families.split(","):
        folder = work / "folders" / family
        if not folder.is_dir():
            folder = fx._folders()[family](work / "folders" / "_new")
            folder.rename(work / "folders" / family)
            folder = work / "folders" / family
        kw = {} if family.startswith("unet2d") else {"prompt": "a lighthouse at dusk"}
        ref_path = work / f"{family}-onnx-fp32.npy"
        for fmt in fmts:
            rows = []
            rep = ConvertReport(None)
            t0 = time.perf_counter()
            bundle, convert_error = None, None
            try:
                bundle = edge_sdk.convert(folder, work / f"{family}-{fmt}.bundle", formats=fmt,
                                          precisions=",".join(precs), components=fx._components(folder),
                                          overwrite=True, keep_going=True, samples=1, report=rep)
            except Exception as e:  # noqa: BLE001 - every precision failed: one row each
                convert_error = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            share = (time.perf_counter() - t0) / len(precs)
            for prec in precs:
                row: dict = {"family": family, "format": fmt, "precision": prec, "converts": False,
                             "generates": False}
                t1 = time.perf_counter()
                failed = [f for f in rep.failures if f.precision == prec]
                if convert_error or failed:
                    f = failed[0] if failed else None
                    row["error"] = convert_error or f"{f.component}: {type(f.error).__name__}: {f.error.message[:300]}"
                else:
                    try:
                        row["converts"] = True
                        arts = [a for c in bundle.components for a in bundle.artifacts(c) if a.precision == prec]
                        row["validates"] = max(float(a.validation["rel_l2"]) for a in arts)
                        with edge_sdk.load(bundle.root, format=fmt, precision=prec) as g:
                            img = g.generate(seed=0, steps=2, **kw).raw
                        row["generates"] = True
                        np.save(work / f"{family}-{fmt}-{prec}.npy", img)
                        if fmt == "onnx" and prec == "fp32":
                            np.save(ref_path, img)
                        elif ref_path.is_file():
                            row["rel_l2_vs_onnx_fp32"] = _rel(img, np.load(ref_path))
                    except Exception as e:  # noqa: BLE001 - a table row per failure
                        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                row["seconds"] = round(share + time.perf_counter() - t1, 1)
                print(json.dumps(row), flush=True)
                rows.append(row)
            if args.results:
                _merge(Path(args.results), rows)


if __name__ == "__main__":
    sys.exit(main())
