"""Path safety: a path taken from a manifest or an archive never leaves its root."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from edge_sdk.errors import UnsafePathError


def check_relpath(rel: str, *, where: str) -> PurePosixPath:
    """Return ``rel`` as a POSIX path if it is relative and stays inside its root.

    Refuses absolute paths, drive letters, backslashes, empty parts and any '..' component.
    """
    if not isinstance(rel, str) or not rel:
        raise UnsafePathError(f"{where}: empty path", hint="paths in a bundle are relative file names")
    if "\\" in rel or "\x00" in rel or ":" in rel.split("/")[0]:
        raise UnsafePathError(f"{where}: path {rel!r} has a backslash, NUL or drive prefix")
    p = PurePosixPath(rel)
    if p.is_absolute():
        raise UnsafePathError(f"{where}: absolute path {rel!r} is not allowed",
                              hint="paths must be relative to the bundle root")
    if any(part in ("..", "") for part in rel.split("/")) or rel.startswith("./"):
        raise UnsafePathError(f"{where}: path {rel!r} leaves the bundle ('..' or empty part)")
    return p


def resolve_inside(root: Path, rel: str, *, where: str) -> Path:
    """Join ``rel`` to ``root`` and refuse it if any component is a link or it escapes ``root``."""
    p = check_relpath(rel, where=where)
    current = root
    for part in p.parts:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return root / Path(*p.parts)
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(f"{where}: {rel!r} goes through a symbolic link ({current.name})",
                                  hint="bundles hold regular files only")
    full = root / Path(*p.parts)
    if not str(full.resolve()).startswith(str(root.resolve()) + os.sep):
        raise UnsafePathError(f"{where}: {rel!r} resolves outside {root}")
    return full
