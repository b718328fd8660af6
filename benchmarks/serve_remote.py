"""Latency the remote hop adds per denoiser step on loopback, and queue behaviour of `edge-sdk serve`.

    python benchmarks/serve_remote.py BUNDLE [--steps 20] [--repeats 3] [--out results/serve_remote.json]

Starts `edge-sdk serve BUNDLE` on 127.0.0.1 (it serves every component over the Open Inference
Protocol), then generates with the plan all-local and with the denoiser remote on that server
(JSON tensors, then binary), and reports the difference per step. Then fills the queue
(--max-queue 2) with concurrent requests and times the 429s and the drain.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def start_server(bundle: str, *args: str) -> tuple[subprocess.Popen, str]:
    exe = Path(sys.executable).with_name("edge-sdk")
    p = subprocess.Popen([str(exe), "serve", bundle, "--port", "0", "--json", "--log-level", "warning", *args],
                         stdout=subprocess.PIPE, text=True)
    return p, json.loads(p.stdout.readline())["url"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    import httpx

    import edge_sdk
    from edge_sdk.bundle import Bundle
    from edge_sdk.planning.planner import PlanRequest, plan

    b = Bundle.open(a.bundle)
    board = "x86-64-generic"
    prompt = "a small house near the river at night" if b.model.get("conditioning") == "text" else None
    proc, url = start_server(a.bundle, "--max-steps", "1000")
    res: dict = {"bundle": b.name, "steps": a.steps, "cpu_count": os.cpu_count()}
    try:
        def per_run(p) -> float:
            with edge_sdk.load(b, plan=p) as g:
                g.generate(prompt=prompt, seed=0, steps=2)  # warm up sessions and connections
                times = []
                for _ in range(a.repeats):
                    t0 = time.perf_counter()
                    g.generate(prompt=prompt, seed=0, steps=a.steps)
                    times.append(time.perf_counter() - t0)
            return float(np.median(times))

        local = plan(b, board, PlanRequest(installed_only=True, measure=False))
        remote = plan(b, board, PlanRequest(installed_only=True, measure=False, remote={"denoiser": url}))
        remote_bin = plan(b, board, PlanRequest(installed_only=True, measure=False, remote={"denoiser": url}))
        remote_bin.components["denoiser"].options["binary"] = True
        t_local, t_json, t_bin = per_run(local), per_run(remote), per_run(remote_bin)
        res["remote_hop"] = {"local_s": t_local, "remote_json_s": t_json, "remote_binary_s": t_bin,
                             "added_ms_per_step_json": (t_json - t_local) / a.steps * 1000,
                             "added_ms_per_step_binary": (t_bin - t_local) / a.steps * 1000,
                             "round_trip_ms": remote.components["denoiser"].options.get("latency_ms")}
    finally:
        proc.terminate()
        proc.wait()

    # Queue: 1 running + 2 waiting; 8 concurrent requests.
    proc, url = start_server(a.bundle, "--max-queue", "2", "--max-steps", "1000")
    try:
        out: list = []
        body = {"prompt": prompt, "steps": a.steps * 5} if prompt else {"steps": a.steps * 5}

        def one():
            t0 = time.perf_counter()
            r = httpx.post(url + "/v1/images/generations", json=body, timeout=600)
            out.append((r.status_code, time.perf_counter() - t0))

        ths = [threading.Thread(target=one) for _ in range(8)]
        t0 = time.perf_counter()
        for t in ths:
            t.start()
            time.sleep(0.01)
        for t in ths:
            t.join()
        total = time.perf_counter() - t0
        ok = sorted(s for c, s in out if c == 200)
        rej = sorted(s for c, s in out if c == 429)
        res["queue"] = {"concurrent": 8, "max_queue": 2, "ok": len(ok), "rejected_429": len(rej),
                        "ok_latency_s": ok, "reject_latency_ms_max": max(rej) * 1000 if rej else None,
                        "drain_s": total}
    finally:
        proc.terminate()
        proc.wait()
    print(json.dumps(res, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
