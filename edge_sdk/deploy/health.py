"""The install health check: one short generation from a release, run in a child process.

``python -m edge_sdk.deploy.health BUNDLE --steps 1`` loads the bundle as an app would, generates
one image and checks it is finite; it prints a JSON summary and exits 0, or prints one
``error:`` line and exits 1. The installer runs it with a deadline, so a crash, a hang or a
native abort in a runtime cannot take the installer down with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edge_sdk.errors import DeployError


def run_health_check(bundle: Path, *, steps: int = 1, timeout: float = 120.0) -> dict[str, Any]:
    """Run the check on ``bundle`` in a child; return its summary or raise DeployError."""
    cmd = [sys.executable, "-m", "edge_sdk.deploy.health", str(bundle), "--steps", str(steps)]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DeployError(f"health check of {bundle} did not finish within {timeout:g} s",
                          hint="the new release was not switched to; "
                               "raise --health-timeout if the board is slow") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
        errs = [ln for ln in lines if ln.startswith("error:")]
        why = (errs or lines or [f"exit status {proc.returncode}"])[-1]
        if proc.returncode < 0:
            why = f"the check process died with signal {-proc.returncode}"
        raise DeployError(f"health check of {bundle} failed: {why.removeprefix('error: ')}",
                          hint="the new release was not switched to; the previous one stays current")
    try:
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DeployError(f"health check of {bundle} printed no summary") from None
    summary["seconds"] = round(time.monotonic() - t0, 3)
    return summary


def _check(bundle: str, steps: int) -> dict[str, Any]:
    import numpy as np

    from edge_sdk.api import load

    t0 = time.monotonic()
    with load(bundle, verify=False) as gen:  # the installer verified every file already
        result = gen.generate(steps=steps, seed=0, batch=1)
    images = np.asarray(result.images)
    raw = np.asarray(result.raw) if getattr(result, "raw", None) is not None else images
    if not np.isfinite(raw).all():
        raise DeployError("the generated image has NaN or Inf values")
    return {"steps": steps, "shape": list(images.shape), "mean": float(images.mean()),
            "generate_seconds": round(time.monotonic() - t0, 3), "plan": {
                k: f"{c.runtime}:{c.format}/{c.precision}" for k, c in gen.plan.components.items()}}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from edge_sdk.errors import EdgeSDKError

    p = argparse.ArgumentParser(prog="python -m edge_sdk.deploy.health")
    p.add_argument("bundle")
    p.add_argument("--steps", type=int, default=1)
    args = p.parse_args(argv)
    os.environ.setdefault("EDGE_SDK_NO_PROGRESS", "1")
    try:
        summary = _check(args.bundle, args.steps)
    except EdgeSDKError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - any failure of the check is a failed check
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
