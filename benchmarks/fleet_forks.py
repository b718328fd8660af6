"""Time of `edge-sdk fleet deploy` per host on loopback, and how it scales with Ansible's --forks.

    python benchmarks/fleet_forks.py --hosts 6 --forks 1,2,6 [--bundle B]

Starts HOSTS real sshd on 127.0.0.1 (the same setup as tests/fleet), deploys a fresh bundle (new
roots each time) with the canary alone and then every other host in one batch (--serial 100%), at
each --forks, then once more at the last --forks with nothing to change (the idempotent run). Prints
one JSON line per run. Loopback hides the network: on real boards add upload time (package size /
link speed) and the board's own health-check generation time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _fleet_helpers():
    # The sshd/inventory helpers of tests/fleet (one copy of that setup).
    spec = importlib.util.spec_from_file_location("fleet_conftest", REPO / "tests" / "fleet" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fleet_conftest"] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=6)
    ap.add_argument("--forks", default="1,2,6")
    ap.add_argument("--bundle", help="bundle to deploy (default: convert examples/tiny_unet.py)")
    a = ap.parse_args()
    fc = _fleet_helpers()
    d = Path(tempfile.mkdtemp(prefix="edge-sdk-fleet-bench-"))
    env = {**os.environ, "ANSIBLE_HOME": str(d / "ansible-home"), "EDGE_SDK_NO_PROGRESS": "1"}
    bundle = a.bundle
    if bundle is None:
        bundle = str(d / "tiny.bundle")
        subprocess.run([fc.EDGE_SDK, "convert", f"{REPO / 'examples' / 'tiny_unet.py'}:factory", "-o", bundle,
                        "--name", "tiny", "-q"], check=True, env=env)
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True) if os.geteuid() == 0 else None
    hosts, known = {}, []
    for i in range(a.hosts):
        name, port = f"b{i}", fc._free_port()
        cfg = d / f"sshd_{name}.conf"
        cfg.write_text("\n".join([
            "ListenAddress 127.0.0.1", f"HostKey {d / 'host_key'}", f"PidFile {d / f'{name}.pid'}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}", "PermitRootLogin yes", "StrictModes no", "UsePAM no",
            "PasswordAuthentication no", "LogLevel ERROR", "MaxSessions 50", "MaxStartups 50:30:100",
            "Subsystem sftp internal-sftp", ""]))
        hosts[name] = fc.Host(name, "rpi4-4gb" if i % 2 == 0 else "jetson-orin-nano-8gb", port, d / f"root-{name}",
                              cfg, d / f"{name}.log")
        known.append(f"[127.0.0.1]:{port} {(d / 'host_key.pub').read_text().strip()}")
    (d / "known_hosts").write_text("\n".join(known) + "\n")
    for h in hosts.values():
        h.start()
    try:
        forks = [int(f) for f in a.forks.split(",")]
        for run, f in enumerate(forks + [forks[-1]]):
            idem = run == len(forks)
            if not idem:  # fresh roots: every host really installs
                for h in hosts.values():
                    h.root = d / f"root-{h.name}-{run}"
            inv = fc.write_inventory(d / f"inv-{run}.yml", hosts, d / "user_key", d / "known_hosts")
            t0 = time.monotonic()
            r = subprocess.run([fc.EDGE_SDK, "fleet", "deploy", str(inv), bundle, "--serial", "100%", "--forks", str(f),
                                "--state-dir", str(d / f"state-{run}"), "--json", "-q"], capture_output=True, text=True,
                               env=env)
            s = json.loads(r.stdout)
            print(json.dumps({"hosts": a.hosts, "forks": f, "idempotent_run": idem, "rc": r.returncode,
                              "seconds": round(time.monotonic() - t0, 1),
                              "seconds_per_host": round((time.monotonic() - t0) / a.hosts, 2),
                              "results": sorted({x["result"] for x in s["hosts"].values()}),
                              "load_avg_1m": os.getloadavg()[0]}), flush=True)
    finally:
        for h in hosts.values():
            h.stop()


if __name__ == "__main__":
    main()
