"""`edge-sdk install` / `rollback` on the device: verified, atomic, reversible releases.

Layout under the install root::

    releases/<id>/          one folder per installed package (id: sha256 of its package.json),
        package.json        never written again once renamed into place
        bundle/...
    current -> releases/<id>   switched by renaming a new link over the old (rename(2) is atomic)
    state.json              the order in which releases became current (for rollback and pruning)
    staging/                where `edge-sdk flash` uploads packages
    .lock                   one install or rollback at a time

An install reads the archive twice. The first pass reads package.json (first entry), checks its
signature where asked, then every header: only regular files and folders whose names and sizes
are in package.json, nothing absolute, no '..', no links, devices or fifos; nothing is written
before this pass succeeds. The second pass streams each file into a fresh folder, hashing while it
writes, then fsyncs every file and folder, renames the folder into ``releases/``, runs the
optional health check, and only then switches ``current``. A kill at any point leaves either the
old ``current`` or the new, complete one.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from edge_sdk.bundle import Bundle
from edge_sdk.deploy import signing
from edge_sdk.deploy.archive import Member, check_name, iter_members, open_stream
from edge_sdk.deploy.options import check_install_options
from edge_sdk.deploy.package import (
    BUNDLE_DIR,
    MAX_PACKAGE_JSON,
    PACKAGE_FORMAT,
    PACKAGE_JSON,
    PACKAGE_VERSION,
)
from edge_sdk.errors import DeployError, EdgeSDKError, IntegrityError, UnsafePathError
from edge_sdk.guard.config_schema import INSTALL_STATE
from edge_sdk.guard.config_schema import PACKAGE as PACKAGE_SCHEMA
from edge_sdk.guard.config_schema import validate as validate_config
from edge_sdk.guard.faults import kill_point
from edge_sdk.guard.fsutil import atomic_write, fsync_dir, sha256_file
from edge_sdk.names import check_name as check_valid_name

RELEASES = "releases"
CURRENT = "current"
STATE = "state.json"
STAGING = "staging"
LOCK = ".lock"
INCOMING = ".incoming-"
DEFAULT_KEEP = 2
DEFAULT_ROOT = "~/edge-sdk"
# Fault injection for tests: ``edge_sdk.guard.faults.kill_point`` SIGKILLs this process at these stages,
# as a power cut or an OOM kill would.
STAGES = ("verified", "extracting", "extracted", "released", "link-created", "switched")
_CHUNK = 1 << 20
MAX_STATE_BYTES = 1 << 20
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


# -- reading and checking a package -----------------------------------------------------------
@dataclass
class PackageInfo:
    path: Path
    doc: dict[str, Any]
    raw: bytes  # the exact bytes of package.json (what the signature covers)
    sig: bytes | None
    files: dict[str, dict[str, Any]]  # archive name -> {size, sha256, mode}
    dirs: set[str]
    signed_by: str | None = None

    @property
    def release_id(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()[:16]

    @property
    def total_bytes(self) -> int:
        return sum(f["size"] for f in self.files.values())


def _read_member(stream, member: Member, limit: int, where: str) -> bytes:
    if member.is_dir:
        raise DeployError(f"{where}: {member.name} must be a file")
    if member.size > limit:
        raise DeployError(f"{where}: {member.name} is {member.size} bytes, over the {limit} byte limit")
    return stream.read(member.size)


def _parse_doc(raw: bytes, where: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]], set[str]]:
    from edge_sdk.guard.safeio import loads_json  # duplicate keys, NaN, overflow refused

    doc = loads_json(raw, source=f"{where}: package.json", error=DeployError)
    if not isinstance(doc, dict) or doc.get("format") != PACKAGE_FORMAT:
        raise DeployError(f"{where}: package.json is not an edge-sdk package manifest")
    check_valid_name(doc.get("name"), what="package name", where=f"{where}: package.json field name", error=DeployError)
    if doc.get("package_version") != PACKAGE_VERSION:
        raise DeployError(f"{where}: package version {doc.get('package_version')!r} is not supported "
                          f"(this edge-sdk reads {PACKAGE_VERSION})", hint="upgrade edge-sdk on this board")
    # Types and finite bounds of every field (hardening class 6); paths are checked below, in code.
    validate_config(doc, PACKAGE_SCHEMA, source=f"{where}: package.json", error=DeployError,
                    hint="this package was not made by `edge-sdk package`, or was edited")
    files: dict[str, dict[str, Any]] = {}
    for rec in doc["files"]:
        name, size, digest, mode = rec["path"], rec["size"], rec["sha256"], int(rec["mode"], 8)
        check_name(name, where=f"{where}: package.json")
        if not name.startswith(BUNDLE_DIR + "/"):
            raise UnsafePathError(f"{where}: package.json lists {name!r} outside {BUNDLE_DIR}/")
        if name in files:
            raise DeployError(f"{where}: package.json lists {name} twice")
        files[name] = {"size": size, "sha256": digest, "mode": mode}
    dirs = {str(p) for n in files for p in PurePosixPath(n).parents if str(p) != "."}
    if dirs & set(files):
        raise DeployError(f"{where}: package.json lists a path as both a file and a folder")
    return doc, files, dirs


def read_package(path: str | os.PathLike, *, verify_key: str | os.PathLike | None = None) -> PackageInfo:
    """Check a package without writing anything: package.json, its signature, every entry header."""
    path = Path(path)
    where = f"package {path}"
    if not path.is_file():
        raise DeployError(f"{where} not found" if not path.exists() else f"{where} is not a file")
    info: PackageInfo | None = None
    seen: set[str] = set()
    with open_stream(path) as f:
        for index, (member, stream) in enumerate(iter_members(f, where=where)):
            if index == 0:
                if member.name != PACKAGE_JSON:
                    raise DeployError(f"{where}: the first entry is {member.name!r}, not {PACKAGE_JSON}",
                                      hint="not an edge-sdk package; make one with `edge-sdk package`")
                raw = _read_member(stream, member, MAX_PACKAGE_JSON, where)
                doc, files, dirs = _parse_doc(raw, where)
                info = PackageInfo(path, doc, raw, None, files, dirs)
                continue
            assert info is not None
            if index == 1 and member.name == signing.SIG_NAME:
                info.sig = _read_member(stream, member, 64 * 1024, where)
                continue
            if member.name in seen:
                raise DeployError(f"{where}: entry {member.name!r} appears twice", hint="the archive was altered")
            seen.add(member.name)
            if member.is_dir:
                if member.name not in info.dirs:
                    raise DeployError(f"{where}: folder {member.name!r} is not in package.json",
                                      hint="the archive was altered; package the bundle again")
                continue
            rec = info.files.get(member.name)
            if rec is None:
                raise DeployError(f"{where}: file {member.name!r} is not listed in package.json",
                                  hint="the archive was altered; package the bundle again")
            if member.size != rec["size"]:
                raise IntegrityError(f"{where}: file {member.name} is {member.size} bytes, package.json says "
                                     f"{rec['size']}", hint="the archive was altered; package the bundle again")
    if info is None:
        raise DeployError(f"{where} is empty")
    missing = sorted(set(info.files) - seen)
    if missing:
        raise IntegrityError(f"{where}: {len(missing)} file(s) listed in package.json are missing, e.g. {missing[0]}",
                             hint="the archive is incomplete; copy or package it again")
    if verify_key is not None:
        info.signed_by = signing.verify(info.raw, info.sig, signing.load_public_key(verify_key), where=where)
    return info


def _extract(info: PackageInfo, dest: Path) -> None:
    """Second pass: stream every file into ``dest`` (fresh, ours), hashing as it writes; fsync all."""
    where = f"package {info.path}"
    written = 0
    with open_stream(info.path) as f:
        for index, (member, stream) in enumerate(iter_members(f, where=where)):
            if index == 0 or (index == 1 and member.name == signing.SIG_NAME):
                continue
            if member.is_dir:
                if member.name not in info.dirs:
                    raise DeployError(f"{where}: folder {member.name!r} is not in package.json (the file changed?)")
                continue
            rec = info.files.get(member.name)
            if rec is None or rec["size"] != member.size:
                raise DeployError(f"{where}: {member.name!r} differs from the first read (the file changed?)")
            target = dest / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                h, n = hashlib.sha256(), 0
                while chunk := stream.read(_CHUNK):
                    h.update(chunk)
                    n += len(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                if n != rec["size"] or h.hexdigest() != rec["sha256"]:
                    raise IntegrityError(f"{where}: file {member.name} fails its sha256 check",
                                         hint="the package was altered or corrupted; refusing to install it")
                os.fchmod(fd, rec["mode"])
                os.fsync(fd)
            finally:
                os.close(fd)
            written += 1
            if written == 1:
                kill_point("extracting")
    for rel in (PACKAGE_JSON, signing.SIG_NAME):
        data = info.raw if rel == PACKAGE_JSON else info.sig
        if data is not None:
            fd = os.open(dest / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
    for dirpath, _dirs, _files in os.walk(dest, topdown=False):
        fsync_dir(Path(dirpath))


# -- the install root --------------------------------------------------------------------------
class _Lock:
    """An exclusive flock on ``root/.lock``; waits up to ``timeout`` for another install to end."""

    def __init__(self, root: Path, timeout: float = 120.0) -> None:
        self.path, self.timeout, self.fd = root / LOCK, timeout, -1

    def __enter__(self) -> _Lock:
        try:  # O_NOFOLLOW: a .lock that is a link (to /etc/passwd, say) is refused, not opened
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as e:
            raise DeployError(f"cannot open lock file {self.path}: "
                              + ("it is a symbolic link" if e.errno == errno.ELOOP else (e.strerror or str(e))),
                              hint="remove it; edge-sdk creates it as a plain file") from None
        if not stat.S_ISREG(os.fstat(self.fd).st_mode):
            os.close(self.fd)
            raise DeployError(f"lock file {self.path} is not a regular file", hint="remove it")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise DeployError(f"another install or rollback holds {self.path}",
                                      hint="wait for it to finish and try again") from None
                time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # closing releases the lock


def _root(root: str | os.PathLike | None) -> Path:
    return Path(os.path.expanduser(str(root if root is not None else DEFAULT_ROOT))).absolute()


def _check_releases_dir(root: Path) -> None:
    """``releases/`` must be a real folder: a link would make install and prune write and delete elsewhere."""
    rel = root / RELEASES
    try:
        st = os.lstat(rel)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        raise DeployError(f"{rel} is {'a symbolic link' if stat.S_ISLNK(st.st_mode) else 'not a folder'}; "
                          "edge-sdk does not follow links it did not make",
                          hint="replace it with a plain folder, or choose another --root")


def _prepare_root(root: Path) -> None:
    _check_releases_dir(root)
    try:
        (root / RELEASES).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DeployError(f"cannot create install root {root}: {e.strerror}",
                          hint="choose a writable --root, or create it for this user") from None
    cur = root / CURRENT
    if cur.exists() and not cur.is_symlink():
        raise DeployError(f"{cur} is not a link made by edge-sdk install",
                          hint="move it away; edge-sdk manages `current` as a symbolic link")


def current_release(root: str | os.PathLike | None = None) -> str | None:
    """The id ``current`` points at, or None when nothing is installed."""
    link = _root(root) / CURRENT
    try:
        target = os.readlink(link)
    except (FileNotFoundError, OSError):
        return None
    parts = PurePosixPath(target).parts
    if len(parts) != 2 or parts[0] != RELEASES:
        raise DeployError(f"{link} points at {target!r}, not at a release", hint="run `edge-sdk install` again")
    return parts[1]


def _read_state(root: Path) -> dict[str, Any]:
    """state.json: {"history": [release ids]}; strict (safeio), its schema (edge_sdk/schemas/install-state),
    one DeployError naming file and field."""
    from edge_sdk.guard.safeio import load_json

    path = root / STATE
    if not os.path.lexists(path):
        return {"history": []}
    data = load_json(path, max_bytes=MAX_STATE_BYTES, error=DeployError, what="install state")
    validate_config(data, INSTALL_STATE, source=str(path), error=DeployError,
                    hint="move it away; the next install writes a new one")
    return {"history": data.get("history", [])}


def _write_state(root: Path, state: dict[str, Any]) -> None:
    with atomic_write(root / STATE, "w") as f:
        json.dump(state, f, indent=2)
        f.write("\n")


def _switch(root: Path, release_id: str) -> None:
    """Point ``current`` at ``releases/<id>``: a new link renamed over the old one, then fsync the root."""
    tmp = root / f".{CURRENT}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    os.symlink(f"{RELEASES}/{release_id}", tmp)
    try:
        kill_point("link-created")
        os.replace(tmp, root / CURRENT)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(root)


def _clean_stale(root: Path) -> None:
    """Remove what killed installs left: incoming folders and temporary links whose pid is gone."""
    from edge_sdk.bundle import _pid_alive

    for p in (root / RELEASES).glob(f"{INCOMING}*"):
        pid = p.name[len(INCOMING):].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(f".{CURRENT}.tmp-*"):
        pid = p.name.split("tmp-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            p.unlink(missing_ok=True)


def _prune(root: Path, keep: int, history: list[str]) -> list[str]:
    """Delete releases beyond the current one and the ``keep`` before it; return what was removed.

    Only releases this install root recorded (in state.json's history) and that are still what
    edge-sdk made (a real folder with package.json) are removed; anything else under ``releases/``
    is someone else's and is left alone."""
    _check_releases_dir(root)
    cur = current_release(root)
    keep_ids = set(history[-(keep + 1):]) | ({cur} if cur else set())
    removed = []
    for rid in history:
        p = root / RELEASES / rid
        if rid in keep_ids or not _is_our_release(p):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(rid)
    if removed:
        fsync_dir(root / RELEASES)
    return removed


def _is_our_release(p: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(p).st_mode) and stat.S_ISREG(os.lstat(p / PACKAGE_JSON).st_mode)
    except FileNotFoundError:
        return False


def _check_runtimes(info: PackageInfo) -> None:
    """Refuse a package this board cannot run: none of its runtimes is installed here."""
    req = info.doc.get("requirements") or {}
    wanted = [r for r in req.get("runtimes", []) if isinstance(r, str)]
    if not wanted:
        return
    from edge_sdk.runtimes.registry import get_runtime

    for r in wanted:
        try:
            if get_runtime(r).probe().get("available"):
                return
        except EdgeSDKError:
            continue
    hints = req.get("install") or {}
    board = req.get("board", "this board")
    raise DeployError(f"none of the runtimes package {info.doc.get('name')!r} needs for {board} "
                      f"({', '.join(wanted)}) is installed on this device",
                      hint="install one: " + "; or ".join(hints.get(r, f"pip install 'edge-sdk[{r}]'") for r in wanted))


def _disk_full(e: OSError, root: Path, need: int) -> DeployError:
    free = shutil.disk_usage(root).free
    return DeployError(f"disk full under {root} while installing ({e.strerror}): the release needs "
                       f"{need / 1e6:.1f} MB, {free / 1e6:.1f} MB is free",
                       hint="free space (old releases: lower --keep) or choose another --root")


def install(package: str | os.PathLike, root: str | os.PathLike | None = None, *, keep: int = DEFAULT_KEEP,
            verify_key: str | os.PathLike | None = None, expect_sha256: str | None = None,
            health_check: bool = False, health_steps: int = 1, health_timeout: float = 120.0,
            check_runtimes: bool = True) -> dict[str, Any]:
    """Install ``package`` as a new release under ``root`` and make it current. See the module doc."""
    check_install_options(keep=keep, health_steps=health_steps, health_timeout=health_timeout)
    root_p = _root(root)
    package = Path(package)
    _prepare_root(root_p)
    with _Lock(root_p):
        if expect_sha256 is not None:
            got = sha256_file(package) if package.is_file() else None
            if got != expect_sha256.lower():
                raise IntegrityError(f"package {package} has sha256 {got}, expected {expect_sha256}",
                                     hint="the upload is incomplete or was altered; send it again")
        info = read_package(package, verify_key=verify_key)
        kill_point("verified")
        if check_runtimes:
            _check_runtimes(info)
        rid = info.release_id
        releases = root_p / RELEASES
        final = releases / rid
        previous = current_release(root_p)
        summary = {"root": str(root_p), "release": rid, "name": info.doc.get("name"),
                   "board": (info.doc.get("requirements") or {}).get("board"),
                   "sdk_version": info.doc.get("sdk_version"), "previous": previous,
                   "bundle": str(root_p / CURRENT / BUNDLE_DIR), "signed_by": info.signed_by}
        if previous == rid:
            try:
                Bundle.open(final / BUNDLE_DIR, verify=True)
            except EdgeSDKError as e:
                raise DeployError(f"release {rid} is current but damaged: {e.message}",
                                  hint="roll back (`edge-sdk rollback`), then install the package again") from None
            return {**summary, "status": "already-current"}
        _clean_stale(root_p)
        need = info.total_bytes + len(info.raw) + 64 * 1024
        free = shutil.disk_usage(releases).free
        if free < need:
            raise DeployError(f"not enough disk space under {root_p}: the release needs {need / 1e6:.1f} MB, "
                              f"{free / 1e6:.1f} MB is free",
                              hint="free space (old releases: lower --keep) or choose another --root")
        incoming = releases / f"{INCOMING}{os.getpid()}-{rid}"
        try:
            incoming.mkdir(mode=0o755)
            _extract(info, incoming)
            Bundle.open(incoming / BUNDLE_DIR, verify=True)
            kill_point("extracted")
            if os.path.lexists(final):  # left by an install killed before its switch, or rolled away from
                if not _is_our_release(final):
                    raise DeployError(f"{final} exists and is not a release edge-sdk made",
                                      hint="move it away, then install again")
                shutil.rmtree(final)
            os.rename(incoming, final)
            fsync_dir(releases)
        except OSError as e:
            shutil.rmtree(incoming, ignore_errors=True)
            if e.errno in _DISK_FULL:
                raise _disk_full(e, root_p, need) from None
            raise DeployError(f"cannot write release {final}: {e.strerror or e}") from None
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        kill_point("released")
        if health_check:
            try:
                summary["health"] = _health(final, health_steps, health_timeout)
            except BaseException:
                shutil.rmtree(final, ignore_errors=True)  # never current; the old one stays
                raise
        _switch(root_p, rid)
        kill_point("switched")
        state = _read_state(root_p)
        history = [h for h in state["history"] if h != rid]
        if previous and previous not in history:
            history.append(previous)
        history.append(rid)
        state["history"] = history
        _write_state(root_p, state)
        summary["removed"] = _prune(root_p, keep, history)
        return {**summary, "status": "installed"}


def _health(release: Path, steps: int, timeout: float) -> dict[str, Any]:
    from edge_sdk.deploy.health import run_health_check

    return run_health_check(release / BUNDLE_DIR, steps=steps, timeout=timeout)


def rollback(root: str | os.PathLike | None = None, *, to: str | None = None) -> dict[str, Any]:
    """Make the release before the current one (or ``to``) current again, after verifying it."""
    root_p = _root(root)
    _check_releases_dir(root_p)
    if not (root_p / RELEASES).is_dir():
        raise DeployError(f"nothing is installed under {root_p}", hint="give the --root you installed into")
    with _Lock(root_p):
        cur = current_release(root_p)
        state = _read_state(root_p)
        history = [h for h in state["history"] if (root_p / RELEASES / h).is_dir()]
        if to is None:
            candidates = [h for h in history if h != cur]
            if not candidates:
                raise DeployError(f"no earlier release to roll back to under {root_p}",
                                  hint="`edge-sdk rollback --list` shows what is installed")
            target = candidates[-1]
        else:
            matches = [p.name for p in (root_p / RELEASES).iterdir()
                       if not p.name.startswith(".") and p.name.startswith(to)]
            if len(matches) != 1:
                raise DeployError(f"{'no' if not matches else 'more than one'} release matches {to!r} under {root_p}",
                                  hint="`edge-sdk rollback --list` shows the release ids")
            target = matches[0]
        if target == cur:
            return {"root": str(root_p), "current": cur, "previous": cur, "status": "already-current"}
        Bundle.open(root_p / RELEASES / target / BUNDLE_DIR, verify=True)  # never switch to a damaged one
        _switch(root_p, target)
        # The release rolled away from leaves the history, so a second rollback goes further back.
        state["history"] = [h for h in history if h not in (cur, target)] + [target]
        _write_state(root_p, state)
        return {"root": str(root_p), "current": target, "previous": cur, "status": "rolled-back",
                "bundle": str(root_p / CURRENT / BUNDLE_DIR)}


def list_releases(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every release folder under ``root``, oldest first by history, with its name and whether current."""
    root_p = _root(root)
    rel_dir = root_p / RELEASES
    if not rel_dir.is_dir():
        return []
    cur = current_release(root_p)
    history = _read_state(root_p)["history"]
    out = []
    for p in rel_dir.iterdir():
        if p.name.startswith(".") or not p.is_dir():
            continue
        from edge_sdk.guard.safeio import load_json

        try:
            doc = load_json(p / PACKAGE_JSON, max_bytes=MAX_PACKAGE_JSON, error=DeployError, what="package.json")
            validate_config(doc, PACKAGE_SCHEMA, source=str(p / PACKAGE_JSON), error=DeployError)
        except DeployError:  # listed without its details; rollback verifies a release before using it
            doc = {}
        out.append({"release": p.name, "name": doc.get("name"), "sdk_version": doc.get("sdk_version"),
                    "board": (doc.get("requirements") or {}).get("board"), "current": p.name == cur,
                    "order": history.index(p.name) if p.name in history else -1})
    return sorted(out, key=lambda r: (r["order"], r["release"]))
