"""The systemd unit that runs an app embedding edge-sdk on a board, from a template file.

``render_unit`` fills ``templates/edge-sdk-app.service``. The app command is given as a shell-like
string; each argument is re-quoted for systemd's own ExecStart rules (``%`` specifiers and ``$``
expansion escaped), so a path with spaces or a literal ``%`` reaches the app unchanged.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from importlib import resources

from edge_sdk import __version__
from edge_sdk.errors import DeployError
from edge_sdk.names import check_name

TEMPLATE = "edge-sdk-app.service"
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_TARGET = re.compile(r"[A-Za-z0-9_.@-]{1,200}\.target")


def unit_name(package_name: str) -> str:
    """``edge-sdk-<name>.service`` with anything systemd would not accept in a name replaced."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", package_name).strip("-.") or "app"
    return f"edge-sdk-{safe}.service"


def _systemd_quote(arg: str) -> str:
    """One ExecStart argument: escape specifiers and variables, double-quote when needed."""
    if "\n" in arg or "\x00" in arg:
        raise DeployError(f"the app command argument {arg!r} has a newline or NUL")
    s = arg.replace("%", "%%").replace("$", "$$")
    if s and not re.search(r'[\s"\'\\;]', s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_start(app: str, bundle: str) -> str:
    """The ExecStart line for ``app`` (``{bundle}`` in it becomes the current bundle's path)."""
    try:
        argv = shlex.split(app)
    except ValueError as e:
        raise DeployError(f"cannot parse the app command {app!r}: {e}") from None
    if not argv:
        raise DeployError("the app command is empty", hint="e.g. --app 'python3 /opt/myapp/serve.py {bundle}'")
    if not argv[0].startswith("/"):
        raise DeployError(f"the app command must start with an absolute path, got {argv[0]!r}",
                          hint="systemd does not search PATH reliably on every version; give /usr/bin/python3 etc.")
    return " ".join(_systemd_quote(a.replace("{bundle}", bundle)) for a in argv)


def render_unit(*, name: str, root: str, bundle: str, app: str, oneshot: bool = False, user: str | None = None,
                memory_max: str | None = None, wanted_by: str = "multi-user.target") -> str:
    """The unit file text for running ``app`` against the board's current bundle."""
    # Every value that lands in the unit verbatim is checked against a strict pattern first: a name
    # with a newline would otherwise add lines such as ExecStartPre= (code run as the unit's user).
    check_name(name, what="app name", where="service unit", error=DeployError)
    if user is not None and not _USER.fullmatch(user):
        raise DeployError(f"service unit: user {user!r} is not a valid user name")
    if not _TARGET.fullmatch(wanted_by):
        raise DeployError(f"service unit: WantedBy {wanted_by!r} is not a systemd target name")
    template = resources.files("edge_sdk.deploy").joinpath(f"templates/{TEMPLATE}").read_text()
    extra = []
    if user:
        extra.append(f"User={user}")
    if memory_max:
        if not re.fullmatch(r"\d+[KMGT]?|\d+%|infinity", memory_max):
            raise DeployError(f"--memory-max {memory_max!r} is not a systemd size (e.g. 6G, 80%)")
        extra.append(f"MemoryMax={memory_max}")
    for value, what in ((root, "root"), (bundle, "bundle path")):
        if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value) or '"' in value \
                or "\\" in value:
            raise DeployError(f"the {what} {value!r} has a newline or other control character, a quote or a backslash")
    return template.format(
        sdk_version=__version__, name=name, root=root.replace("%", "%%"), bundle=bundle.replace("%", "%%"),
        type="oneshot" if oneshot else "exec", exec_start=exec_start(app, bundle),
        extra="\n".join(extra) + ("\n" if extra else ""), wanted_by=wanted_by)
