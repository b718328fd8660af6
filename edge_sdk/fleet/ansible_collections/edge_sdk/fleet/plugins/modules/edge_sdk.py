#!/usr/bin/python
# Runs on the managed host under ansible_python_interpreter: it only calls the edge-sdk command there
# (never imports edge_sdk), so the host's edge-sdk can live in any venv.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: edge_sdk
short_description: Run an edge-sdk command on the host with --json and return its result
description:
  - Calls C(edge-sdk doctor|info|install|rollback|run) (or C(rollback --list) for C(releases)) with C(--json)
    on the managed host and returns the parsed JSON as C(result).
  - C(install) and C(rollback) report C(changed) only when they switched C(current).
  - A failing command fails the task with edge-sdk's own one-line error, its hint and exit code.
options:
  command:
    description: What to run.
    type: str
    required: true
    choices: [doctor, info, install, rollback, releases, run]
  executable:
    description: The edge-sdk command on the host (an absolute path when it lives in a venv).
    type: str
    default: edge-sdk
  root:
    description: Install root (releases/, current, state.json).
    type: str
    default: ~/edge-sdk
  package:
    description: Package file on the host (C(install)).
    type: path
  expect_sha256:
    description: sha256 the package file must have (C(install)).
    type: str
  health_check:
    description: Run edge-sdk's health check before switching (C(install)).
    type: bool
    default: false
  health_steps:
    description: Steps of the health-check generation.
    type: int
    default: 1
  health_timeout:
    description: Seconds the install health check may take.
    type: float
    default: 120
  keep:
    description: Earlier releases to keep (C(install)).
    type: int
    default: 2
  to:
    description: Release id to roll back to (C(rollback)); default the previous one.
    type: str
  bundle:
    description: Bundle folder (C(info), C(run)); default C(ROOT/current/bundle).
    type: path
  out:
    description: PNG the C(run) command writes.
    type: path
  steps:
    description: Sampler steps for C(run).
    type: int
    default: 1
author:
  - edge-sdk developers
"""

EXAMPLES = r"""
- name: What is installed
  edge_sdk.fleet.edge_sdk:
    command: releases
    root: /opt/edge-sdk
  register: releases

- name: Install a staged package with a health check
  edge_sdk.fleet.edge_sdk:
    command: install
    package: /opt/edge-sdk/staging/model.tar
    health_check: true
"""

RETURN = r"""
result:
  description: The JSON edge-sdk printed (a list for C(releases)).
  returned: success
  type: raw
cmd:
  description: The command line that ran.
  returned: always
  type: list
  elements: str
"""

import json  # noqa: E402
import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402


def _argv(p: dict) -> list:
    exe, root = p["executable"], os.path.expanduser(p["root"])
    cmd = p["command"]
    bundle = p["bundle"] or os.path.join(root, "current", "bundle")
    if cmd == "doctor":
        return [exe, "doctor", "--json"]
    if cmd == "info":
        return [exe, "info", bundle, "--json"]
    if cmd == "releases":
        return [exe, "rollback", "--root", root, "--list", "--json"]
    if cmd == "rollback":
        return [exe, "rollback", "--root", root, "--json"] + (["--to", p["to"]] if p["to"] else [])
    if cmd == "run":
        out = p["out"] or os.path.join(root, "health.png")
        return [exe, "run", bundle, "--steps", str(p["steps"]), "--out", out, "--json"]
    argv = [exe, "install", p["package"], "--root", root, "--keep", str(p["keep"]), "--json"]
    if p["expect_sha256"]:
        argv += ["--expect-sha256", p["expect_sha256"]]
    if p["health_check"]:
        argv += ["--health-check", "--health-steps", str(p["health_steps"]),
                 "--health-timeout", "%g" % p["health_timeout"]]
    return argv


def _error(stderr: str) -> tuple:
    """edge-sdk prints `error: WHAT` then `  hint: WHAT TO DO`; keep those two lines."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errs = [i for i, ln in enumerate(lines) if ln.startswith(("error:", "internal error:"))]
    if not errs:
        return (lines[-1] if lines else "no message"), None
    i = errs[-1]
    hint = lines[i + 1].split("hint:", 1)[1].strip() if i + 1 < len(lines) and lines[i + 1].startswith("hint:") else None
    return lines[i].split(":", 1)[1].strip(), hint


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            command=dict(type="str", required=True, choices=["doctor", "info", "install", "rollback", "releases", "run"]),
            executable=dict(type="str", default="edge-sdk"),
            root=dict(type="str", default="~/edge-sdk"),
            package=dict(type="path"),
            expect_sha256=dict(type="str"),
            health_check=dict(type="bool", default=False),
            health_steps=dict(type="int", default=1),
            health_timeout=dict(type="float", default=120.0),
            keep=dict(type="int", default=2),
            to=dict(type="str"),
            bundle=dict(type="path"),
            out=dict(type="path"),
            steps=dict(type="int", default=1),
        ),
        required_if=[("command", "install", ["package"])],
        supports_check_mode=False,
    )
    argv = _argv(module.params)
    env = {"EDGE_SDK_NO_PROGRESS": "1"}
    rc, out, err = module.run_command(argv, environ_update=env)
    if rc != 0:
        msg, hint = _error(err)
        module.fail_json(msg="edge-sdk %s failed (exit %d): %s" % (module.params["command"], rc, msg),
                         hint=hint, rc=rc, cmd=argv, stderr=err[-2000:])
    try:
        result = json.loads(out)
    except ValueError:
        module.fail_json(msg="edge-sdk %s printed no JSON" % module.params["command"], cmd=argv,
                         stdout=out[-2000:], stderr=err[-2000:])
    changed = module.params["command"] in ("install", "rollback") and result.get("status") not in ("already-current",)
    module.exit_json(changed=changed, result=result, cmd=argv)


if __name__ == "__main__":
    main()
