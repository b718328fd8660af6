"""Last step of scripts/arm64-check: compare the ARM images with the x86 ones and write the results JSON.

Per case (bundle, runtime, precision) present on both sides: the largest difference of any
channel value (0-255), the share of pixels (any channel) that differ at all and that differ by
more than one level. fp32 passes when no value differs by more than 1 and at most 1% of pixels
differ; fp16 and int8 are reported, not judged (ARM and x86 kernels round differently there).

    python compare.py WORK_DIR RESULTS_JSON
    python compare.py --markdown RESULTS_JSON [RESULTS_JSON...]   # the table of docs/boards.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

FP32_MAX_LEVEL = 1
FP32_MAX_PIXEL_SHARE = 0.01


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    per_pixel = d.max(axis=-1)  # NHWC: a pixel differs when any channel does
    return {"max_level_diff": int(d.max()), "pixels_differing": round(float((per_pixel > 0).mean()), 5),
            "pixels_over_1_level": round(float((per_pixel > 1).mean()), 5), "mean_abs_diff": round(float(d.mean()), 4)}


def main(work: Path, results: Path) -> int:
    host = json.loads((work / "x86" / "report.json").read_text())
    arm = json.loads((work / "arm" / "report.json").read_text()) if (work / "arm" / "report.json").is_file() else None
    extra = json.loads((work / "arm-extra.json").read_text()) if (work / "arm-extra.json").is_file() else {}
    rows = []
    host_ok = {(c["bundle"], c["runtime"], c["precision"]) for c in host["cases"] if c.get("ok")}
    for c in (arm or {}).get("cases", []):
        key = (c["bundle"], c["runtime"], c["precision"])
        row = {**c, "x86_generate_s": next((h.get("generate_s") for h in host["cases"]
                                            if (h["bundle"], h["runtime"], h["precision"]) == key), None)}
        name = f"{c['bundle']}-{c['runtime']}-{c['precision']}.npy"
        if c.get("ok") and key in host_ok:
            row.update(compare(np.load(work / "arm" / "images" / name), np.load(work / "x86" / "images" / name)))
            if c["precision"] == "fp32":
                row["fp32_criterion_met"] = (row["max_level_diff"] <= FP32_MAX_LEVEL
                                             and row["pixels_differing"] <= FP32_MAX_PIXEL_SHARE)
        rows.append(row)
    out = {
        "what": f"edge-sdk device side on an emulated {extra.get('arch', 'arm64')} Debian userland (qemu-user), "
                "images against x86-64",
        "note": "times are under qemu emulation on a shared x86 host: NOT board times",
        "fp32_criterion": f"every value within {FP32_MAX_LEVEL} level and at most {FP32_MAX_PIXEL_SHARE:.0%} of "
                          "pixels differing",
        "x86": {k: host[k] for k in ("machine", "python", "runtimes", "threads", "steps")},
        "arm": {k: arm[k] for k in ("machine", "python", "runtimes", "torch_importable", "import_s")} if arm else None,
        "cold_start_s": {"x86": host.get("cold_start_s"), "arm": (arm or {}).get("cold_start_s")},
        **extra,
        "cases": rows,
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(out, indent=1) + "\n")
    fp32 = [r for r in rows if r["precision"] == "fp32"]
    bad = [r for r in fp32 if not r.get("fp32_criterion_met")]
    for r in rows:
        print(f"{r['bundle']:5} {r['runtime']:12} {r['precision']:12} ok={r.get('ok')} "
              f"max={r.get('max_level_diff')} differing={r.get('pixels_differing')} {r.get('error', '')}")
    print(f"wrote {results}; fp32 cases meeting the criterion: {len(fp32) - len(bad)}/{len(fp32)}")
    return 0 if arm and fp32 and not bad else 1


def markdown(results: list[Path]) -> str:
    """One row per architecture x runtime x format x precision; a runtime that did not install gets one row."""
    lines = ["| arch | model | runtime | format | precision | installs | runs | max level diff vs x86 "
             "| pixels differing | generate s (emulated) | generate s (x86) |", "|" + "---|" * 11]
    for path in results:
        r = json.loads(path.read_text())
        arch = r.get("arch", path.stem)
        seen = set()
        for c in r["cases"]:
            seen.add(c["runtime"])
            runs = "yes" if c.get("ok") else "no: " + c.get("error", "")[:80]
            lines.append(f"| {arch} | {c['bundle']} | {c['runtime']} | {c['format']} | {c['precision']} | "
                         f"yes | {runs} | "
                         f"{c.get('max_level_diff', '-')} | {_pct(c.get('pixels_differing'))} | "
                         f"{c.get('generate_s', '-')} | {c.get('x86_generate_s', '-')} |")
        for line in r.get("runtimes_one_by_one", []):
            name, _, how = line.partition(": ")
            runtime = {"ai-edge-litert": "litert", "tflite-runtime": "litert"}.get(name, name)
            if name in ("onnxruntime", "ai-edge-litert", "tflite-runtime") and runtime not in seen:
                lines.append(f"| {arch} | - | {name} | - | - | {'yes' if how.startswith('installs') else 'no: ' + how} "
                             "| - | - | - | - | - |")
    return "\n".join(lines)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share:.1%}"


if __name__ == "__main__":
    if sys.argv[1] == "--markdown":
        print(markdown([Path(p) for p in sys.argv[2:]]))
        sys.exit(0)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
