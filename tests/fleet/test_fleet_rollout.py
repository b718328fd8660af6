"""Rolling deploys through the shipped Ansible collection to three real sshd 'boards' on 127.0.0.1.

Few, rich scenarios (each ansible-playbook run costs seconds): they share one fleet and run in order,
each starting from what the one before left on the hosts.
"""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ssh]


def _deploy(fleet, bundle, *args):
    r = fleet.cli("fleet", "deploy", str(fleet.inventory), str(bundle), "--state-dir", str(fleet.state_dir),
                  "--json", *args)
    summary = json.loads(r.stdout) if r.stdout.strip().startswith("{") else None
    return r, summary


def test_rolling_deploy_then_idempotent_then_status(fleet, fleet_bundles):
    r, s = _deploy(fleet, fleet_bundles["v1"], "--serial", "2")
    assert r.returncode == 0, r.stderr[-4000:]
    print(json.dumps(s["recap"]), s["seconds"])
    for name, h in fleet.hosts.items():
        rec = s["hosts"][name]
        assert rec["result"] == "changed" and rec["health"]["passed"] is True
        assert h.current() == rec["release"] and h.staged() == []
    assert 0
