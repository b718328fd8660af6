"""SD 1.5 at its published dimensions on each board's plan: peak RSS, estimate, time, PSNR (issue 16).

One board per call (so each run can hold the shared big-memory lock alone), merged into
benchmarks/results/full_size_boards.json:

    flock /work/data/bigmem.lock python benchmarks/full_size_boards.py --board rpi5-8gb \
        --bundle /work/data/fs/ref.bundle
    python benchmarks/full_size_boards.py --board rpi-zero-2w --bundle /work/data/fs/small.bundle

Each run is what ``edge-sdk run BUNDLE --board B --size 512x512 --steps 2 --guidance 7.5 --seed 0``
does (``streaming.RUN_CHILD``: fixed random prompt embeddings, the folders written by
``convert_full_size.write_sd15_folder`` have no tokenizer), in a fresh process under
``/usr/bin/time -v`` (peak RSS of the whole process), with the run-time cap watch off so the peak
is measured rather than stopped. The PSNR is against the ``--reference`` board's image (the
resident fp32 plan, rpi5-8gb). The bundles:

- ``ref.bundle``: denoiser + decoder, ONNX fp32, full attention (``convert`` of the folder).
- ``small.bundle``: denoiser + decoder, ONNX int8-weight, ``--attention sliced:32``, the denoiser
  also as stream parts per layer (``--stream-parts denoiser --stream-split layers``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from streaming import RESULTS, plan_for, psnr, run  # noqa: E402

OUT = RESULTS / "full_size_boards.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", required=True)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--workdir", type=Path, default=Path("/work/data/fs"))
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--reference", default="rpi5-8gb", help="the board whose image is the PSNR reference")
    args = ap.parse_args()
    res = json.loads(OUT.read_text()) if OUT.is_file() else {"runs": {}}
    plan = plan_for(args.bundle, args.board, args.size, args.guidance)
    print("plan:", json.dumps(plan), flush=True)
    row = {"bundle": str(args.bundle), "plan": plan, "load_before": os.getloadavg()}
    if "refused" not in plan:
        image = args.workdir / f"{Path(args.board).stem}.png"
        row.update(run(args.bundle, args.board, image, args.size, args.steps, args.guidance))
        row["load_after"] = os.getloadavg()
        ref = res["runs"].get(args.reference)
        if ref and ref.get("image") and args.board != args.reference:
            row["psnr_db_vs_reference"] = psnr(Path(ref["image"]), image)
            row["time_ratio_vs_reference"] = row["seconds"] / ref["seconds"]
    row["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    res["runs"][args.board] = row
    res.update({"size": args.size, "steps": args.steps, "guidance": args.guidance, "seed": 0,
                "reference": args.reference,
                "machine": f"{platform.machine()} {os.cpu_count()} cores, shared (load averages per run)"})
    RESULTS.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k != "plan"}), flush=True)


if __name__ == "__main__":
    main()
