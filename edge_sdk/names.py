"""Names that flow from bundles and packages into other languages: one strict pattern, one escape
per sink (hardening class 2, docs/hardening.md).

A bundle, package or app name is checked against ``NAME`` where it enters edge-sdk (convert
``--name``, a manifest or package.json being read, a unit being rendered). The pattern admits no
space, quote, ``%``, ``$``, newline or control character, so such a name is safe as it is in a
systemd unit file, a shell word and a file name. Text that is not a name (paths, descriptions,
messages) is escaped for the terminal by ``for_terminal`` before edge-sdk prints it.
"""

from __future__ import annotations

import re
import unicodedata

from edge_sdk.errors import EdgeSDKError, UsageError

MAX_NAME = 128
NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._+-]{{0,{MAX_NAME - 1}}}")
NAME_RULE = f"1 to {MAX_NAME} characters: letters, digits and . _ + -, starting with a letter or digit"
# The same rule for JSON Schema (manifest.schema.json) and anyone else who needs it as text.
NAME_PATTERN = "^" + NAME.pattern + "$"


def check_name(value: object, *, what: str, where: str = "", error: type[EdgeSDKError] = UsageError) -> str:
    """Return ``value`` if it is a valid name; else one error saying what, where and the rule."""
    if isinstance(value, str) and NAME.fullmatch(value):
        return value
    shown = for_terminal(repr(value)[:80])
    raise error(f"{where + ': ' if where else ''}{what} {shown} is not a valid name", hint=NAME_RULE)


def sanitize(value: str, fallback: str = "model") -> str:
    """A valid name made from ``value`` (for names derived from file or folder names, not given)."""
    s = re.sub(r"[^A-Za-z0-9._+-]+", "-", value).strip("-._+")[:MAX_NAME]
    return s if s and NAME.fullmatch(s) else fallback


def for_terminal(text: str) -> str:
    """``text`` with control and format characters (ESC, CR, BEL, C1, bidi overrides...) shown as
    escapes, so a crafted name cannot move the cursor, recolour or rewrite the terminal. Newlines and
    tabs are escaped too: one printed value is one line."""
    out = []
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def for_terminal_lines(text: str) -> str:
    """``for_terminal`` for a multi-line block of output: each line escaped, the newlines kept."""
    return "\n".join(for_terminal(line) for line in text.split("\n"))
