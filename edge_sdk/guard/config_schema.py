"""JSON Schema checks for the files edge-sdk reads on a board besides manifests: a package's
package.json and an install root's state.json (hardening class 6; schemas in edge_sdk/schemas/).

Each check gives one error naming the file and the field. A schema node's ``description`` is the
human wording of its rule ("must be a list of at most 10000 release ids"); without one, the
validator's own message is used. Error lists are capped, so a document with millions of bad
entries costs no more than one with twenty (class 7).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from itertools import islice
from typing import Any

from edge_sdk.errors import EdgeSDKError

MAX_ERRORS = 20
PACKAGE = "package"
INSTALL_STATE = "install-state"
# Rules about an object's keys: the validator's message names the key, which a description cannot.
_OWN_WORDING = {"additionalProperties", "required", "propertyNames", "dependentRequired"}


@cache
def schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files("edge_sdk").joinpath(f"schemas/{name}.schema.json").read_text())


@cache
def _validator(name: str):
    import jsonschema

    s = schema(name)
    return jsonschema.validators.validator_for(s)(s)


def validate(data: Any, name: str, *, source: str, error: type[EdgeSDKError], hint: str | None = None) -> Any:
    """Check ``data`` against schema ``name``; raise ``error`` naming ``source`` and the first bad field."""
    errors = sorted(islice(_validator(name).iter_errors(data), MAX_ERRORS),
                    key=lambda e: (len(e.absolute_path), e.message))
    if not errors:
        return data
    e = errors[0]
    where = "/".join(str(p) for p in e.absolute_path)
    rule = e.schema.get("description") if isinstance(e.schema, dict) else None
    if rule and e.validator not in _OWN_WORDING:
        got = repr(e.instance)
        what = f"{rule}, got {got if len(got) <= 80 else got[:80] + '...'}"
    else:
        what = e.message if len(e.message) <= 300 else e.message[:300] + "..."
    count = f"{len(errors)}" if len(errors) < MAX_ERRORS else f"at least {MAX_ERRORS}"
    raise error(f"{source}: {'field ' + where + ' ' if where else ''}{what}".replace("\n", " "),
                hint=f"{count} schema error(s)" + (f"; {hint}" if hint else ""))
