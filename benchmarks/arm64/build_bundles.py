"""Host side of scripts/arm64-check: convert the two bundles the ARM userland runs (needs torch).

- ``demo``: the shipped class-conditional demo model (edge_sdk.converters.demo.spec:factory).
- ``text``: a text-conditioned SD-shaped model: WordLevel tokenizer + CLIPTextModel +
  UNet2DConditionModel + AutoencoderKL decoder, tiny seeded configs (the pipeline tests' model,
  tests/pipelines/conftest.py:build_text_spec).

Both in ONNX and TFLite at fp32, fp16, int8-weight and int8-static (an int8 artifact over its
tolerance is left out, as `convert --keep-going` does).

    python benchmarks/arm64/build_bundles.py OUT_DIR [--precisions fp32,fp16,int8-weight,int8-static]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _pipeline_conftest():
    spec = importlib.util.spec_from_file_location("arm64_text_model", REPO / "tests/pipelines/conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--precisions", default="fp32,fp16,int8-weight,int8-static")
    ap.add_argument("--formats", default="onnx,tflite")
    args = ap.parse_args(argv)
    import edge_sdk
    from edge_sdk.converters.demo.spec import factory

    args.out.mkdir(parents=True, exist_ok=True)
    precs, fmts = args.precisions.split(","), args.formats.split(",")
    for name, build in (("demo", lambda w: factory()), ("text", lambda w: _pipeline_conftest().build_text_spec(w)[0])):
        dst = args.out / f"{name}.bundle"
        if (dst / "manifest.json").is_file():
            print(f"{name}: reusing {dst}", flush=True)
            continue
        t = time.perf_counter()
        work = args.out / f"{name}-work"
        work.mkdir(exist_ok=True)
        spec = build(work)
        comps = [c for c in spec.components if c != "encoder"]  # img2img is not part of this check
        # keep_going: an int8 artifact over its tolerance (tiny random-weight models quantize badly) is
        # left out and reported instead of stopping the rest.
        edge_sdk.convert(spec, dst, formats=fmts, precisions=precs, components=comps, samples=1, keep_going=True)
        print(f"{name}: converted in {time.perf_counter() - t:.0f} s -> {dst}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
