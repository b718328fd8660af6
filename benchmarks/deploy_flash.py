"""What packaging, installing and flashing cost, and how much a resumed upload re-sends.

A bundle of the tiny denoiser plus an incompressible payload of each ``--sizes`` MB is packaged
(.tar and .tar.gz), installed locally, and flashed over a real OpenSSH server on 127.0.0.1 (a
throwaway ``sshd -D`` with its own keys, as in tests/deploy) with both transfers. Then an upload is
cut (the flash process group is SIGKILLed once about half the bytes have arrived) and flashed
again: the report gives the bytes the second run sent against the bytes that were missing.
Loopback has no network cost, so flash times here are the tool's own overhead (ssh handshakes,
hashing, the board-side install), not a link's speed.

    python benchmarks/deploy_flash.py [--sizes 16,64] [--repeats 3]

Writes benchmarks/results/deploy_flash.json.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "deploy_flash.json"
EDGE_SDK = str(Path(sys.executable).with_name("edge-sdk"))


def start_sshd(d: Path):
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    (d / "sshd_config").write_text("\n".join([
        "ListenAddress 127.0.0.1", f"HostKey {d / 'host_key'}", f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}", "PermitRootLogin yes", "StrictModes no", "UsePAM no",
        "PasswordAuthentication no", "LogLevel ERROR", ""]))
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "-D", "-e", "-f", str(d / "sshd_config"), "-p", str(port)],
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {(d / 'host_key.pub').read_text()}")
    (d / "ssh_config").write_text("")
    kw = {"port": port, "identity": str(d / "user_key"), "ssh_config": str(d / "ssh_config"),
          "ssh_options": [f"UserKnownHostsFile={d / 'known_hosts'}", "StrictHostKeyChecking=yes"],
          "remote_edge_sdk": EDGE_SDK}
    return proc, f"{getpass.getuser()}@127.0.0.1", kw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="16,64", help="payload sizes in MB")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "tests" / "deploy"))
    from conftest import make_variant  # the same bundle variants the tests use

    import edge_sdk
    from edge_sdk.deploy import flash, install, package

    work = Path(tempfile.mkdtemp(prefix="edge-sdk-bench-"))
    base = work / "tiny.bundle"
    edge_sdk.convert(f"{REPO / 'examples' / 'tiny_unet.py'}:factory", base, formats="onnx", precisions="fp32",
                     name="tiny")
    sshd, host, kw = start_sshd(work)
    rows = []
    try:
        for mb in (int(x) for x in args.sizes.split(",")):
            b = make_variant(base, work / f"b{mb}.bundle", name=f"bench-{mb}", payload=mb * 1_000_000)
            row: dict = {"payload_mb": mb}
            for suffix in (".tar", ".tar.gz"):
                times = []
                for i in range(args.repeats):
                    out = work / f"p{mb}-{i}{suffix}"
                    t0 = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        s = package(b, "bench-board", out)
                    times.append(time.perf_counter() - t0)
                row[f"package{suffix}_s"] = round(statistics.median(times), 3)
                row[f"package{suffix}_bytes"] = s["size"]
            pkg = work / f"p{mb}-0.tar"
            times = []
            for i in range(args.repeats):
                root = work / f"root{mb}-{i}"
                t0 = time.perf_counter()
                install(pkg, root, check_runtimes=False)
                times.append(time.perf_counter() - t0)
            row["install_s"] = round(statistics.median(times), 3)
            for transfer in ("rsync", "ssh"):
                times = []
                for i in range(args.repeats):
                    t0 = time.perf_counter()
                    flash(pkg, host, root=str(work / f"board-{transfer}-{mb}-{i}"), transfer=transfer, **kw)
                    times.append(time.perf_counter() - t0)
                row[f"flash_{transfer}_s"] = round(statistics.median(times), 3)
                # Cut one upload at about half, then resume it.
                root = work / f"cut-{transfer}-{mb}"
                staging = root / "staging"
                size = pkg.stat().st_size
                cmd = [EDGE_SDK, "flash", str(pkg), "--host", host, "--root", str(root), "--transfer", transfer,
                       "--bwlimit", "20000", "-q", "-i", kw["identity"], "-F", kw["ssh_config"], "--port",
                       str(kw["port"]), "--remote-edge-sdk", EDGE_SDK, *sum((["-o", o] for o in kw["ssh_options"]), [])]
                p = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.DEVNULL)
                while p.poll() is None:
                    got = max((f.stat().st_size for f in staging.glob("*") if f.is_file()), default=0) \
                        if staging.is_dir() else 0
                    if got >= size // 2:
                        break
                    time.sleep(0.01)
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                time.sleep(1.0)  # the board-side receiver settles
                s = flash(pkg, host, root=str(root), transfer=transfer, **kw)
                row[f"resume_{transfer}"] = {"package_bytes": size, "had": s["resumed_from"],
                                             "missing": size - s["resumed_from"], "sent": s["bytes_sent"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        sshd.terminate()
        sshd.wait()
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                               "load_avg_at_end": os.getloadavg()},
                                   "repeats": args.repeats, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
