"""`edge-sdk fleet`: run the shipped deploy playbook with `ansible-playbook`, and read what it recorded.

edge-sdk never sees credentials: ``ansible-playbook`` reads the inventory, SSH keys, the agent and
vault files itself (``--vault-id``/``--ask-vault-pass`` and ``-e`` are passed through untouched).
Per host the playbook writes ``STATE_DIR/results/HOST.json`` on the controller; after the run this
module adds what only the run as a whole knows (unreachable hosts, hosts the run never reached).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from edge_sdk.errors import DeployError, UsageError
from edge_sdk.fleet import collections_path, playbook

RESULTS = "results"
_RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)"
                    r"\s+skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)")


def ansible_command(name: str) -> str:
    """``ansible-playbook`` / ``ansible-inventory``: next to this Python first (the venv), then PATH."""
    here = Path(sys.executable).with_name(name)
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise DeployError(f"`{name}` is not installed here", hint="pip install 'edge-sdk[fleet]' (ansible-core)")
    return found


def ansible_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for ansible: the shipped collection first on ANSIBLE_COLLECTIONS_PATH, no colour."""
    env = dict(os.environ)
    paths = [str(collections_path())] + [p for p in env.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep) if p]
    env.update({"ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(paths), "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_RETRY_FILES_ENABLED": "0", "EDGE_SDK_NO_PROGRESS": "1", **(extra or {})})
    return env


def default_state_dir(inventory: str | os.PathLike) -> Path:
    """Per inventory, under the user's cache: ~/.cache/edge-sdk/fleet/<name>-<hash of its path>."""
    p = Path(inventory).expanduser().resolve()
    from edge_sdk.cache import cache_dir

    base = cache_dir("fleet")
    return base / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', p.stem)}-{hashlib.sha256(str(p).encode()).hexdigest()[:8]}"


def inventory_hosts(inventory: str | os.PathLike, *, limit: str | None = None) -> dict[str, dict[str, Any]]:
    """host -> its variables, as Ansible resolves them (host and group vars), in inventory order."""
    inv = Path(inventory).expanduser()
    if not inv.exists():
        raise UsageError(f"inventory {inv} not found")
    argv = [ansible_command("ansible-inventory"), "-i", str(inv), "--list", "--export"]
    if limit:
        argv += ["--limit", limit]
    proc = subprocess.run(argv, capture_output=True, text=True, env=ansible_env(), timeout=120,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise UsageError(f"ansible-inventory cannot read {inv}: {proc.stderr.strip()[-400:]}")
    data = json.loads(proc.stdout)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    order: list[str] = []

    def walk(group: str, inherited: dict[str, Any]) -> None:
        g = data.get(group, {})
        merged = {**inherited, **g.get("vars", {})}
        for h in g.get("hosts", []):
            if h not in order:
                order.append(h)
            hostvars[h] = {**merged, **hostvars.get(h, {})}
        for child in g.get("children", []):
            walk(child, merged)

    walk("all", {})
    odd = [h for h in order if "/" in h or h.startswith(".") or "\0" in h]
    if odd:  # the host name becomes a file name under STATE_DIR/results
        raise UsageError(f"host names with '/' or a leading '.' in {inv}: {', '.join(odd)}",
                         hint="name the host plainly and put its address in ansible_host")
    if not order:
        raise UsageError(f"inventory {inv} has no hosts" + (f" matching --limit {limit}" if limit else ""))
    return {h: hostvars.get(h, {}) for h in order}


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP lines -> {host: {ok, changed, unreachable, failed, skipped, rescued, ignored}}."""
    keys = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
    recap: dict[str, dict[str, int]] = {}
    for line in output.splitlines():
        m = _RECAP.match(line.strip())
        if m:
            recap[m.group(1)] = dict(zip(keys, map(int, m.groups()[1:]), strict=False))
    return recap


_FATAL = re.compile(r"^fatal: \[([^\]\s]+)[^\]]*\]: (FAILED|UNREACHABLE)! => (\{.*\})\s*$")


def parse_failures(output: str) -> dict[str, str]:
    """host -> the message of its last `fatal: [host]: FAILED!/UNREACHABLE!` line."""
    out: dict[str, str] = {}
    for line in output.splitlines():
        m = _FATAL.match(line.strip())
        if m:
            try:
                msg = json.loads(m.group(3)).get("msg")
            except ValueError:
                msg = None
            out[m.group(1)] = str(msg or m.group(2).lower()).strip()
    return out


def read_records(state_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Every host's last record under STATE_DIR/results (unreadable files are skipped, not fatal)."""
    out: dict[str, dict[str, Any]] = {}
    folder = Path(state_dir) / RESULTS
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("host"):
            out[rec["host"]] = rec
    return out


def _write_record(state_dir: Path, rec: dict[str, Any]) -> None:
    folder = state_dir / RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{rec['host']}.json.tmp"
    tmp.write_text(json.dumps(rec, indent=2) + "\n")
    os.replace(tmp, folder / f"{rec['host']}.json")


def _settle(state_dir: Path, hosts: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]], run_id: str,
            recap: dict[str, dict[str, int]], failures: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Complete this run's records: unreachable and never-reached hosts, health kept across `ok` runs."""
    now = read_records(state_dir)
    final: dict[str, dict[str, Any]] = {}
    for host, hv in hosts.items():
        rec = now.get(host)
        old = before.get(host, {})
        if rec is None or rec.get("run_id") != run_id:
            r = recap.get(host, {})
            result = "unreachable" if r.get("unreachable") else "failed" if r.get("failed") else "not-run"
            rec = {**{k: old.get(k) for k in ("release", "name", "health", "previous")}, "host": host,
                   "board": hv.get("edge_sdk_board", old.get("board")), "run_id": run_id,
                   "time": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "result": result,
                   "error": failures.get(host) or {"unreachable": "the host could not be reached over ssh "
                                                                  "(see the output above)",
                             "failed": "failed before the release role ran (see the output above)",
                             "not-run": "the rollout stopped before this host's batch"}[result]}
            _write_record(state_dir, rec)
        elif rec.get("health") is None and old.get("release") == rec.get("release") and old.get("health"):
            rec = {**rec, "health": old["health"]}  # an `ok` run checks nothing new: keep the last check
            _write_record(state_dir, rec)
        final[host] = rec
    return final


def deploy(inventory: str | os.PathLike, bundle: str | os.PathLike, *, serial: str = "1", canary: str | None = None,
           max_fail_percentage: int = 0, state_dir: str | os.PathLike | None = None, limit: str | None = None,
           forks: int | None = None, extra_vars: list[str] = (), ansible_args: list[str] = (),
           echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the deploy playbook over ``inventory``; return per-host records and the recap.

    The run's exit status is in ``rc``; a non-zero one leaves the failed hosts rolled back (the role
    does it) and the hosts after them untouched.
    """
    b = Path(bundle).expanduser().resolve()
    if not (b / "manifest.json").is_file():
        raise UsageError(f"bundle {b} not found (no manifest.json there)",
                         hint="give the folder `edge-sdk convert` wrote")
    hosts = inventory_hosts(inventory, limit=limit)
    missing = [h for h, v in hosts.items() if not v.get("edge_sdk_board")]
    if missing:
        raise UsageError(f"hosts without edge_sdk_board in {inventory}: {', '.join(missing)}",
                         hint="set edge_sdk_board (a board profile name from `edge-sdk boards`, or PATH.toml) "
                              "as a host or group variable")
    if canary is not None and canary not in hosts:
        raise UsageError(f"--canary {canary} is not a host of {inventory}"
                         + (f" within --limit {limit}" if limit else ""),
                         hint=f"hosts: {', '.join(list(hosts)[:10])}")
    if not re.fullmatch(r"\d+%?", serial) or serial in ("0", "0%"):
        raise UsageError(f"--serial {serial!r}: give a host count (2) or a percentage (25%)")
    state = Path(state_dir).expanduser().resolve() if state_dir else default_state_dir(inventory)
    state.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:12]
    ev = {"edge_sdk_bundle": str(b), "edge_sdk_fleet_dir": str(state), "edge_sdk_run_id": run_id,
          "edge_sdk_serial": serial, "edge_sdk_max_fail_percentage": max_fail_percentage,
          "edge_sdk_canary": canary or next(iter(hosts))}
    before = read_records(state)
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="edge-sdk-fleet-", delete=False) as f:
        json.dump(ev, f)
    argv = [ansible_command("ansible-playbook"), "-i", str(Path(inventory).expanduser()), str(playbook("deploy")),
            "-e", f"@{f.name}"]
    for e in extra_vars:
        argv += ["-e", e]
    if limit:
        argv += ["--limit", limit]
    if forks:
        argv += ["--forks", str(forks)]
    argv += list(ansible_args)
    t0 = time.monotonic()
    lines: list[str] = []
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ansible_env(),
                                stdin=subprocess.DEVNULL)
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if echo:
                echo(line.rstrip("\n"))
        rc = proc.wait()
    finally:
        os.unlink(f.name)
    output = "".join(lines)
    recap = parse_recap(output)
    records = _settle(state, hosts, before, run_id, recap, parse_failures(output))
    return {"run_id": run_id, "rc": rc, "ok": rc == 0, "seconds": round(time.monotonic() - t0, 2),
            "state_dir": str(state), "canary": ev["edge_sdk_canary"], "serial": serial, "hosts": records,
            "recap": recap, "output_tail": output[-4000:] if rc != 0 else ""}


def status(inventory: str | os.PathLike, *, state_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """One row per inventory host: board, release, health, last result (from the last deploy's records)."""
    hosts = inventory_hosts(inventory)
    state = Path(state_dir).expanduser() if state_dir else default_state_dir(inventory)
    records = read_records(state)
    rows = []
    for host, hv in hosts.items():
        rec = records.get(host, {})
        health = rec.get("health")
        rows.append({"host": host, "board": hv.get("edge_sdk_board") or rec.get("board"), "release": rec.get("release"),
                     "name": rec.get("name"),
                     "health": None if not health else ("passed" if health.get("passed") else "failed"),
                     "health_detail": health, "last_result": rec.get("result", "never-deployed"),
                     "error": rec.get("error"), "time": rec.get("time"), "run_id": rec.get("run_id")})
    return rows
