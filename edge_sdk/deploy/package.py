"""`edge-sdk package`: a verified bundle + package.json (+ package.sig) in one deterministic tar.

Layout of the archive, in this order::

    package.json          board, runtime requirements, sdk version, size/sha256/mode of every file
    package.sig           optional: ed25519 signature over the exact bytes of package.json
    bundle/...            the bundle's folders and files, sorted

package.json comes first so an installer can read and check it (and its signature) before it
looks at anything else. Every header is fixed (see ``archive``), so the same bundle, board and key
give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

from edge_sdk import __version__
from edge_sdk.bundle import Bundle
from edge_sdk.deploy import signing
from edge_sdk.deploy.archive import DeterministicTarWriter
from edge_sdk.errors import DeployError, PlanError
from edge_sdk.guard.fsutil import atomic_write
from edge_sdk.manifest import MANIFEST_NAME, all_files

PACKAGE_JSON = "package.json"
PACKAGE_FORMAT = "edge-sdk-package"
PACKAGE_VERSION = 1
BUNDLE_DIR = "bundle"
# package.json is metadata; anything larger is a mistake or an attack.
MAX_PACKAGE_JSON = 4 * 1024 * 1024


def _install_hint(runtime: str) -> str:
    from edge_sdk.runtimes.registry import install_hint

    return install_hint(runtime, f"pip install 'edge-sdk[{runtime}]'")


def board_requirements(board: str, formats: set[str]) -> dict[str, Any]:
    """What a board needs to run a bundle with ``formats``: from its profile, or from the formats alone.

    A board without a profile is accepted (users flash boards we have no file for) with a warning;
    its requirements are then every runtime that can open one of the bundle's formats.
    """
    from edge_sdk.runtimes.registry import runtimes_for_format

    # Which runtimes can open the bundle's formats: each adapter says (OpenVINO reads ONNX too).
    runnable = {r for f in formats for r in runtimes_for_format(f)}
    profile = None
    try:
        from edge_sdk.planning.board import load_board
    except ImportError:  # the board module is optional for packaging
        load_board = None
    if load_board is not None:
        try:
            profile = load_board(board)
        except PlanError as e:
            if "unknown board" not in e.message:
                raise DeployError(f"board {board!r}: {e.message}", hint=e.hint) from None
    if profile is None:
        warnings.warn(f"no board profile named {board!r}: the package lists every runtime that can run "
                      f"the bundle's formats ({', '.join(sorted(formats))})", stacklevel=2)
        runtimes = sorted(runnable)
        devices: list[str] = []
        source = f"bundle formats (no profile for board {board!r})"
        title = None
    else:
        prefs = [(r, d) for r, d in profile.runtimes if r in runnable]
        if not prefs:
            have = ", ".join(f"{r}:{d}" for r, d in profile.runtimes)
            raise DeployError(f"board {board}: none of its runtimes ({have}) can open this bundle's formats "
                              f"({', '.join(sorted(formats))})",
                              hint="convert the model with a --format this board runs, e.g. tflite for litert")
        runtimes = list(dict.fromkeys(r for r, _ in prefs))
        devices = [f"{r}:{d}" for r, d in prefs]
        source = f"board profile {profile.name}"
        title = profile.title
    return {"board": board, "board_title": title, "source": source, "runtimes": runtimes, "devices": devices,
            "install": {r: _install_hint(r) for r in runtimes}}


def _mode(path: Path) -> int:
    return 0o755 if os.stat(path).st_mode & 0o111 else 0o644


def build_package_json(bundle: Bundle, board: str) -> tuple[bytes, list[tuple[str, Path, int, int]]]:
    """The package.json bytes and the (archive name, source, size, mode) of every bundle file."""
    rels = sorted({MANIFEST_NAME, *(f["path"] for f in all_files(bundle.manifest))})
    entries, records = [], []
    for rel in rels:
        src = bundle.root / rel
        st = os.stat(src)
        h = hashlib.sha256()
        with open(src, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        name = f"{BUNDLE_DIR}/{rel}"
        mode = _mode(src)
        entries.append((name, src, st.st_size, mode))
        records.append({"path": name, "size": st.st_size, "sha256": h.hexdigest(), "mode": f"{mode:04o}"})
    formats = {a["format"] for c in bundle.manifest["components"].values() for a in c["artifacts"]}
    doc = {
        "format": PACKAGE_FORMAT,
        "package_version": PACKAGE_VERSION,
        "sdk_version": __version__,
        "name": bundle.name,
        "bundle_sdk_version": bundle.manifest.get("sdk_version"),
        "requirements": board_requirements(board, formats),
        "files": records,
    }
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), entries


def _dirs_of(names: list[str]) -> list[str]:
    dirs = set()
    for n in names:
        for parent in PurePosixPath(n).parents:
            if str(parent) != ".":
                dirs.add(str(parent))
    return sorted(dirs)


def package(bundle: str | os.PathLike, board: str, output: str | os.PathLike, *, compress: bool | None = None,
            sign_key: str | os.PathLike | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write ``output`` (a .tar, or .tar.gz / .tgz when ``compress``) from a verified bundle.

    ``compress`` defaults to the output's suffix. Returns a summary: path, sha256, size, files, signed.
    """
    out = Path(output)
    if compress is None:
        compress = out.name.endswith((".tar.gz", ".tgz"))
    if out.exists() and not overwrite:
        raise DeployError(f"output {out} already exists", hint="pass --overwrite or choose another -o")
    if not out.parent.is_dir():
        raise DeployError(f"output folder {out.parent} does not exist")
    b = Bundle.open(bundle, verify=True)  # never package a bundle that fails its own hashes
    doc, entries = build_package_json(b, board)
    sig = signing.sign(doc, signing.load_private_key(sign_key)) if sign_key is not None else None
    h = hashlib.sha256()
    try:
        with atomic_write(out, "wb") as f:
            hashing = _HashingWriter(f, h)
            w = DeterministicTarWriter(hashing, compress=compress)
            w.add_bytes(PACKAGE_JSON, doc)
            if sig is not None:
                w.add_bytes(signing.SIG_NAME, sig)
            names = {name: (src, size, mode) for name, src, size, mode in entries}
            for d in _dirs_of(list(names)):
                w.add_dir(d)
            for name in sorted(names):
                src, size, mode = names[name]
                w.add_file(name, src, size, mode)
            w.close()
    except OSError as e:
        raise DeployError(f"cannot write package {out}: {e.strerror or e}",
                          hint="check free space and permissions of the output folder") from None
    return {"package": str(out), "sha256": h.hexdigest(), "size": out.stat().st_size, "files": len(entries),
            "name": b.name, "board": board, "signed": sig is not None, "compressed": compress,
            "requirements": json.loads(doc)["requirements"]}


class _HashingWriter:
    """A write-only file wrapper that hashes what passes through (the package's own sha256)."""

    def __init__(self, f, h) -> None:
        self._f, self._h = f, h

    def write(self, data) -> int:
        self._h.update(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def tell(self) -> int:
        return self._f.tell()
