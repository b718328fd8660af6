"""`edge-sdk info`: the manifest of a bundle as a readable table."""

from __future__ import annotations

import click

from edge_sdk.cli.common import emit_json, json_option, say, table


@click.command("info")
@click.argument("bundle", type=click.Path())
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check of every file (faster on big bundles).")
@json_option
def command(bundle, no_verify, as_json):
    """Show what BUNDLE holds: model, sampler defaults, components, artifacts and their validation."""
    from edge_sdk.bundle import Bundle

    b = Bundle.open(bundle, verify=not no_verify)
    if as_json:
        emit_json(b.manifest)
        return
    m = b.manifest
    say(f"bundle   {b.name}  (schema {m['schema_version']}, made by edge-sdk {m['sdk_version']})")
    say(f"verified {'every file sha256' if not no_verify else 'no (--no-verify)'}")
    model = ", ".join(f"{k}={v}" for k, v in m["model"].items() if k != "class_names")
    say(f"model    {model}")
    s = m.get("sampler", {})
    if s:
        say(f"sampler  {s.get('default_sampler', '-')} x {s.get('default_steps', '-')} steps, "
                   f"guidance {s.get('default_guidance', '-')}")
    say("")
    sig_rows = []
    for name, c in m["components"].items():
        for io, tensors in (("in", c["inputs"]), ("out", c["outputs"])):
            for t in tensors:
                sig_rows.append((name, io, t["name"], t["dtype"], "[" + ", ".join(map(str, t["shape"])) + "]"))
    say(table(sig_rows, ("component", "io", "tensor", "dtype", "shape")))
    say("")
    rows = []
    for name in b.components:
        for a in b.artifacts(name):
            v = a.validation or {}
            rows.append((name, a.format, a.precision + (f"/{a.variant}" if a.variant else ""), f"{a.size / 1e6:.2f} MB",
                         f"{v['rel_l2']:.2e}" if v else "-", f"{v['max_abs']:.2e}" if v else "-",
                         f"{v['cosine']:.6f}" if v else "-", v.get("runtime", "-") if v else "-"))
    say(table(rows, ("component", "format", "precision", "size", "rel L2", "max abs", "cosine", "checked on")))
