"""`edge-sdk doctor`: which runtimes, providers and devices are usable here, and why not."""

from __future__ import annotations

import click

from edge_sdk.cli.common import emit_json, json_option, say, table


def _devices(info: dict) -> str:
    devs = ", ".join(info.get("devices") or []) or "-"
    if info.get("providers"):
        devs += f" [{', '.join(info['providers'])}]"
    if info.get("device_names"):
        devs += " (" + "; ".join(f"{k}: {v}" for k, v in info["device_names"].items()) + ")"
    return devs


@click.command("doctor")
@json_option
def command(as_json):
    """List the runtimes, execution providers and devices usable here, and why others are not."""
    from edge_sdk.measure.doctor import report

    r = report()
    if as_json:
        emit_json(r)
        return
    cpu = r["cpu"]
    say(f"edge-sdk {r['edge_sdk']}  python {r['python']}  {r['platform']}")
    say(f"cpu      {cpu['model']} ({cpu['machine']}, {cpu['cores']} logical cores)")
    say(f"features {' '.join(cpu['features']) or 'none of interest'}")
    if r["board"] is not None:
        b = r["board"]
        say(f"board: {b['name'] or 'unknown'} ({'; '.join(b['reasons']) or 'no reasons given'})")
    for note in r.get("arch_notes", []):
        say(f"note: {note}")
    say("")
    rows = []
    for name, info in r["runtimes"].items():
        if info.get("available"):
            usable = "yes" if name in r["usable_device_runtimes"] else "host only"
        else:
            usable = "no"
        why = info.get("reason") or ""
        if not info.get("available") and info.get("install"):
            why = f"{why}; install: {info['install']}" if why else f"install: {info['install']}"
        notes = "; ".join(info.get("notes") or [])
        rows.append((name, info.get("version") or "-", usable, _devices(info), "; ".join(x for x in (why, notes) if x)))
    say(table(rows, ("runtime", "version", "usable", "devices [providers]", "notes")))
    if not r["usable_device_runtimes"]:
        say("\nno device runtime is usable here: pip install 'edge-sdk[onnxruntime]' (or [openvino], [litert])")
