"""Rolling deploys through the shipped Ansible collection to three real sshd 'boards' on 127.0.0.1.

Few, rich scenarios (every ansible-playbook run costs seconds). They share one fleet and run in
file order, each starting from what the one before left on the hosts:

1. a board whose plan does not fit: refused before any host is touched;
2. rolling deploy of v1 (canary, then one batch of 2), the same again (all `ok`), `fleet status`;
3. a release whose health check fails (NaN image) on the canary: rolled back, the others untouched;
4. v2 with a host unreachable in the second batch: canary updated, the run stops, the rest untouched.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ssh]
DEPLOY_FAILED = 8  # DeployError's exit code (README)


def _deploy(fleet, bundle, *args, inventory=None, state_dir=None):
    r = fleet.cli("fleet", "deploy", str(inventory or fleet.inventory), str(bundle),
                  "--state-dir", str(state_dir or fleet.state_dir), "--json", *args)
    assert r.stdout.strip().startswith("{"), r.stderr[-3000:]
    return r, json.loads(r.stdout)


def _snapshot(fleet):
    return {n: (h.current(), h.releases(), h.staged()) for n, h in fleet.hosts.items()}


def test_plan_that_does_not_fit_is_refused_before_any_host_is_touched(fleet, fleet_bundles, tmp_path):
    # jet-a gets a board profile with a 1 MB memory cap: no plan fits it.
    src = Path(__file__).resolve().parents[2] / "boards" / "rpi4-4gb.toml"
    tiny = tmp_path / "tiny-board.toml"
    tiny.write_text(src.read_text().replace('name = "rpi4-4gb"', 'name = "tiny-board"')
                    .replace("cap_mb = 3072", "cap_mb = 1"))
    inv = json.loads(fleet.inventory.read_text())
    inv["all"]["children"]["jetson_orin_nano_8gb"]["vars"]["edge_sdk_board"] = str(tiny)
    bad_inv = tmp_path / "inventory.yml"
    bad_inv.write_text(json.dumps(inv))
    r, s = _deploy(fleet, fleet_bundles["v1"], inventory=bad_inv, state_dir=tmp_path / "state")
    assert r.returncode == DEPLOY_FAILED
    assert "jet-a" in r.stderr and "over its 1 MB cap" in r.stderr  # the plan's own reason, per host
    # No host was contacted: no root folder exists anywhere (the fleet is fresh).
    assert all(not h.root.exists() for h in fleet.hosts.values())
    assert s["hosts"]["jet-a"]["result"] == "failed" and "over its 1 MB cap" in s["hosts"]["jet-a"]["error"]
    assert {s["hosts"][h]["result"] for h in ("pi-a", "pi-b")} == {"not-run"}


def test_rolling_deploy_is_idempotent_and_status_reports_it(fleet, fleet_bundles):
    r, s = _deploy(fleet, fleet_bundles["v1"], "--serial", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    recs = s["hosts"]
    # Packaged once per board kind: both Pis get one release, the Jetson another (its requirements differ).
    assert recs["pi-a"]["release"] == recs["pi-b"]["release"] != recs["jet-a"]["release"]
    for name, h in fleet.hosts.items():
        rec = recs[name]
        assert rec["result"] == "changed" and rec["previous"] == ""
        assert rec["health"]["passed"] is True and Path(rec["health"]["image"]).stat().st_size > 0  # a real PNG
        assert h.current() == rec["release"] and h.releases() == [rec["release"]] and h.staged() == []
        assert s["recap"][name]["changed"] > 0 and s["recap"][name]["failed"] == 0
    before = _snapshot(fleet)

    r2, s2 = _deploy(fleet, fleet_bundles["v1"], "--serial", "2")
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert {h: c["changed"] for h, c in s2["recap"].items()} == {"pi-a": 0, "pi-b": 0, "jet-a": 0}
    assert {h: rec["result"] for h, rec in s2["hosts"].items()} == {"pi-a": "ok", "pi-b": "ok", "jet-a": "ok"}
    assert _snapshot(fleet) == before
    assert all(rec["health"]["passed"] for rec in s2["hosts"].values())  # the last check is kept

    st = fleet.cli("fleet", "status", str(fleet.inventory), "--state-dir", str(fleet.state_dir), "--json")
    assert st.returncode == 0, st.stderr
    rows = {row["host"]: row for row in json.loads(st.stdout)}
    assert {h: (row["board"], row["release"], row["health"], row["last_result"]) for h, row in rows.items()} == {
        h: (fleet.hosts[h].board, fleet.hosts[h].current(), "passed", "ok") for h in fleet.hosts}
    table = fleet.cli("fleet", "status", str(fleet.inventory), "--state-dir", str(fleet.state_dir))
    assert table.returncode == 0 and "last result" in table.stdout
    assert all(f"{h}" in table.stdout and fleet.hosts[h].current() in table.stdout for h in fleet.hosts)

    # The shipped status playbook asks the hosts themselves (read-only: nothing changed).
    from edge_sdk.fleet import playbook
    from edge_sdk.fleet.runner import ansible_command, ansible_env, parse_recap

    live = subprocess.run([ansible_command("ansible-playbook"), "-i", str(fleet.inventory), str(playbook("status"))],
                          capture_output=True, text=True, timeout=300, env=ansible_env(fleet.env))
    assert live.returncode == 0, live.stdout[-3000:]
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in parse_recap(live.stdout).values())
    for h in fleet.hosts.values():
        assert f'"current": "{h.current()}"' in live.stdout


def test_canary_failing_its_health_check_is_rolled_back_and_stops_the_run(fleet, fleet_bundles):
    before = _snapshot(fleet)
    v1_jet = fleet.hosts["jet-a"].current()
    assert v1_jet is not None  # left by the scenario before
    # Health check after the switch only, so the bad release really becomes current and must be rolled back.
    r, s = _deploy(fleet, fleet_bundles["bad"], "--canary", "jet-a", "-e", "edge_sdk_health_before_switch=false")
    assert r.returncode == DEPLOY_FAILED
    jet = s["hosts"]["jet-a"]
    assert jet["result"] == "rolled-back" and jet["release"] == v1_jet and jet["target"] != v1_jet
    assert "Health check" in jet["error"] and "NaN" in jet["error"]
    assert fleet.hosts["jet-a"].current() == v1_jet and fleet.hosts["jet-a"].staged() == []
    assert jet["target"] in fleet.hosts["jet-a"].releases()  # rolled away from, kept until pruned
    for name in ("pi-a", "pi-b"):  # never reached: same files, same release
        assert _snapshot(fleet)[name] == before[name]
        assert s["hosts"][name]["result"] == "not-run"
    assert "rolled back to " + v1_jet in r.stderr


def test_unreachable_host_mid_rollout_stops_before_the_next_batch(fleet, fleet_bundles):
    before = _snapshot(fleet)
    fleet.hosts["pi-b"].stop()
    try:
        r, s = _deploy(fleet, fleet_bundles["v2"], "--canary", "pi-a", "--serial", "1")
    finally:
        fleet.hosts["pi-b"].start()
    assert r.returncode == DEPLOY_FAILED
    res = {h: rec["result"] for h, rec in s["hosts"].items()}
    assert res == {"pi-a": "changed", "pi-b": "unreachable", "jet-a": "not-run"}
    assert fleet.hosts["pi-a"].current() == s["hosts"]["pi-a"]["release"] != before["pi-a"][0]
    assert (fleet.hosts["pi-a"].current() in fleet.hosts["pi-a"].releases()
            and before["pi-a"][0] in fleet.hosts["pi-a"].releases())
    assert _snapshot(fleet)["pi-b"] == before["pi-b"] and _snapshot(fleet)["jet-a"] == before["jet-a"]
    assert s["recap"]["pi-b"]["unreachable"] == 1 and "ssh" in s["hosts"]["pi-b"]["error"].lower()
