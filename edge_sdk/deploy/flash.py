"""`edge-sdk flash`: upload a package to a board over SSH, install it there, report what is current.

Uses the system's ``ssh`` (and ``rsync`` where both ends have it) through subprocess, so the
user's ssh config, agent, jump hosts and known_hosts all apply. Steps, each safe to repeat:

1. check the package here (package.json, signature if a key is given);
2. one ssh call to look at the board: edge-sdk there, rsync there, free space, what is already
   staged, what is current;
3. upload to ``<root>/staging/<sha256>.tar.part``: ``rsync --partial`` (an interrupted upload
   leaves the partial file, and the next run sends only what is missing), else ``cat >>`` from the
   remote size on; then check the staged file's sha256 on the board;
4. run ``edge-sdk install`` on the board (which verifies everything again and switches
   ``current`` atomically), then, with ``--service``, write and (re)start the systemd unit.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_sdk.deploy.install import CURRENT, DEFAULT_KEEP, DEFAULT_ROOT, STAGING, read_package
from edge_sdk.deploy.options import CONNECT_TIMEOUT, FLASH_TIMEOUT, check_install_options
from edge_sdk.deploy.package import BUNDLE_DIR
from edge_sdk.errors import DeployError
from edge_sdk.guard.bounds import check_count, check_seconds
from edge_sdk.guard.fsutil import sha256_file

SSH_UNREACHABLE = 255  # ssh's own exit status for connection, auth and host-key failures
_CHUNK = 256 * 1024


@dataclass
class SshTarget:
    """How to reach a board: ``user@host`` plus whatever the user's ssh needs."""

    host: str
    port: int | None = None
    identity: str | None = None
    config: str | None = None
    options: list[str] = field(default_factory=list)  # each passed as `-o OPTION`
    connect_timeout: int = 15
    control_path: str | None = None  # one shared connection for every step (ssh multiplexing)

    def ssh_argv(self) -> list[str]:
        argv = ["ssh"]
        if self.config:
            argv += ["-F", self.config]
        argv += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}"]
        if self.identity:
            argv += ["-i", self.identity]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.control_path:
            argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.control_path}", "-o", "ControlPersist=20"]
        for opt in self.options:
            argv += ["-o", opt]
        return argv

    def close(self) -> None:
        """Stop the shared connection, if one was opened."""
        if self.control_path and os.path.exists(self.control_path):
            subprocess.run([*self.ssh_argv(), "-O", "exit", self.host], capture_output=True, timeout=30,
                           stdin=subprocess.DEVNULL)

    def run(self, script: str, *, stdin=None, timeout: float | None = None, what: str) -> subprocess.CompletedProcess:
        """Run a POSIX sh ``script`` on the board; ssh's own failures become a clear DeployError."""
        argv = [*self.ssh_argv(), "--", self.host, script]
        try:
            proc = subprocess.run(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout)
        except FileNotFoundError:
            raise DeployError("the `ssh` command is not installed here",
                              hint="install OpenSSH's client (apt-get install openssh-client)") from None
        except subprocess.TimeoutExpired:
            raise DeployError(f"{what} on {self.host} did not finish within {timeout:g} s") from None
        if proc.returncode == SSH_UNREACHABLE:
            raise unreachable(self, proc.stderr.decode(errors="replace"))
        return proc


def unreachable(target: SshTarget, stderr: str) -> DeployError:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("Warning: Permanently")]
    why = lines[-1] if lines else "ssh exited with status 255"
    if "host key" in why.lower() or "REMOTE HOST IDENTIFICATION" in stderr:
        hint = "the board's host key is unknown or changed: check known_hosts (ssh-keyscan, or ssh to it once)"
    elif "permission denied" in why.lower():
        hint = "ssh refused the login: check the user, --identity and that the key is in the board's authorized_keys"
    else:
        hint = (f"check the board is on and sshd runs, and the host/port: try `ssh "
                f"{'-p ' + str(target.port) + ' ' if target.port else ''}{target.host} true`")
    return DeployError(f"cannot reach {target.host} over ssh: {why}", hint=hint)


def remote_path(root: str, *parts: str) -> str:
    """A shell word for ``root/parts`` on the board; a leading ``~/`` becomes ``$HOME``."""
    tail = "/".join(parts)
    if root == "~" or root.startswith("~/"):
        rest = root[2:].rstrip("/")
        joined = "/".join(p for p in (rest, tail) if p)
        return '"$HOME"' + (("/" + shlex.quote(joined)) if joined else "")
    return shlex.quote(root.rstrip("/") + ("/" + tail if tail else "")) if root.rstrip("/") else shlex.quote("/" + tail)


def _rsync_dest(root: str, *parts: str) -> str:
    """The rsync destination path: relative paths are relative to the login's home folder."""
    tail = "/".join(parts)
    base = root[2:] if root.startswith("~/") else ("" if root == "~" else root)
    return "/".join(p for p in (base.rstrip("/"), tail) if p)


@dataclass
class BoardFacts:
    edge_sdk: str | None  # its --version line, or None when missing
    rsync: bool
    free_bytes: int | None
    staged: int
    current: str | None
    root_abs: str
    uid: int | None
    mkdir_ok: bool


def _preflight(t: SshTarget, root: str, staging_name: str, edge: str, timeout: float) -> BoardFacts:
    r = remote_path(root)
    staged = remote_path(root, STAGING, staging_name)
    e = shlex.quote(edge)
    script = "; ".join([
        f"R={r}", f"F={staged}",
        f"if command -v {e} >/dev/null 2>&1; then v=$({e} --version 2>&1 | head -n 1); "
        "echo edge_sdk_found=1; echo \"edge_sdk=$v\"; else echo edge_sdk_found=0; fi",
        "if command -v rsync >/dev/null 2>&1; then echo rsync=1; else echo rsync=0; fi",
        "if mkdir -p \"$R/staging\" 2>/dev/null; then echo mkdir=1; else echo mkdir=0; fi",
        "echo \"free_kb=$(df -Pk \"$R/staging\" 2>/dev/null | awk 'NR==2{print $4}')\"",
        "if [ -f \"$F\" ]; then echo \"staged=$(wc -c < \"$F\" | tr -d ' ')\"; else echo staged=0; fi",
        "echo \"current=$(readlink \"$R/current\" 2>/dev/null)\"",
        "echo \"root_abs=$(cd \"$R\" 2>/dev/null && pwd -P)\"",
        "echo \"uid=$(id -u)\"",
    ])
    proc = t.run(script, timeout=timeout, what="the board check")
    facts: dict[str, str] = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        k, _, v = line.partition("=")
        facts[k.strip()] = v.strip()
    if "uid" not in facts:
        raise DeployError(f"the board check on {t.host} printed nothing useful (exit {proc.returncode}): "
                          f"{proc.stderr.decode(errors='replace').strip()[-300:]}",
                          hint="the login shell must be a POSIX shell (sh, bash, dash, busybox ash)")
    version = facts.get("edge_sdk", "") if facts.get("edge_sdk_found") == "1" else None
    if version is not None and "edge-sdk" not in version:  # the command is there but does not run
        raise DeployError(f"`{edge} --version` does not work on {t.host}: {version[:200] or 'no output'}",
                          hint="repair the board's edge-sdk install (pip install --force-reinstall edge-sdk), "
                               "or point --remote-edge-sdk at a working one")
    cur = facts.get("current") or ""
    return BoardFacts(
        edge_sdk=version, rsync=facts.get("rsync") == "1",
        free_bytes=int(facts["free_kb"]) * 1024 if facts.get("free_kb", "").isdigit() else None,
        staged=int(facts["staged"]) if facts.get("staged", "").isdigit() else 0,
        current=cur.rsplit("/", 1)[-1] if cur else None, root_abs=facts.get("root_abs") or root,
        uid=int(facts["uid"]) if facts.get("uid", "").isdigit() else None, mkdir_ok=facts.get("mkdir") == "1")


def _upload_rsync(t: SshTarget, local: Path, root: str, staging_name: str, bwlimit: int | None,
                  timeout: float) -> int:
    """rsync with --partial: an interrupted run leaves what arrived; the next sends only the rest."""
    ssh_cmd = " ".join(shlex.quote(a) for a in t.ssh_argv())
    argv = ["rsync", "--partial", "--ignore-times", "--no-links", "--chmod=F0600", "--stats", "-e", ssh_cmd]
    if bwlimit:
        argv.append(f"--bwlimit={bwlimit}")
    argv += ["--", str(local), f"{t.host}:{_rsync_dest(root, STAGING, staging_name)}"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DeployError(f"upload to {t.host} did not finish within {timeout:g} s",
                          hint="run flash again: it resumes where the upload stopped") from None
    if proc.returncode != 0:
        if (proc.returncode == SSH_UNREACHABLE
                or "connection unexpectedly closed" in proc.stderr and "ssh:" in proc.stderr):
            raise unreachable(t, proc.stderr)
        low = proc.stderr.lower()
        if "no space left" in low or "disk quota" in low:
            raise DeployError(f"the board {t.host} ran out of disk space during the upload",
                              hint="free space on the board or choose another --root")
        raise DeployError(f"rsync to {t.host} failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}",
                          hint="run flash again: it resumes where the upload stopped")
    m = re.search(r"Total bytes sent:\s*([\d,.]+)", proc.stdout)
    return int(re.sub(r"[,.]", "", m.group(1))) if m else -1


def _upload_ssh(t: SshTarget, local: Path, root: str, staging_name: str, offset: int, bwlimit: int | None,
                timeout: float) -> int:
    """Without rsync: append the bytes after ``offset`` with `cat >>`; a cut leaves a valid prefix."""
    f_remote = remote_path(root, STAGING, staging_name)
    argv = [*t.ssh_argv(), "--", t.host, f"cat >> {f_remote}"]
    sent = 0
    deadline = time.monotonic() + timeout
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise DeployError("the `ssh` command is not installed here") from None
    try:
        with open(local, "rb") as f:
            f.seek(offset)
            t0 = time.monotonic()
            while chunk := f.read(_CHUNK if not bwlimit else min(_CHUNK, bwlimit * 1024 // 4 or 1)):
                proc.stdin.write(chunk)  # type: ignore[union-attr]
                sent += len(chunk)
                if bwlimit:  # for tests: a slow link, so an upload can be cut midway
                    ahead = sent / (bwlimit * 1024) - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
                if time.monotonic() > deadline:
                    raise DeployError(f"upload to {t.host} did not finish within {timeout:g} s",
                                      hint="run flash again: it resumes where the upload stopped")
        proc.stdin.close()  # type: ignore[union-attr]
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except BrokenPipeError:
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""  # type: ignore[union-attr]
    if rc == SSH_UNREACHABLE:
        raise unreachable(t, err)
    if rc != 0:
        if "no space" in err.lower():
            raise DeployError(f"the board {t.host} ran out of disk space during the upload",
                              hint="free space on the board or choose another --root")
        raise DeployError(f"upload to {t.host} failed (exit {rc}): {err.strip()[-400:]}",
                          hint="run flash again: it resumes where the upload stopped")
    return sent


_HASH_MISMATCH = 99  # the install script's exit status when the staged file's sha256 is wrong


def _install_script(root: str, staging_name: str, digest: str, edge: str, keep: int, verify_key: str | None,
                    health_check: bool, health_steps: int, health_timeout: float) -> str:
    """One board-side step: check the upload's sha256, run `edge-sdk install`, tidy the staged file.

    The staged copy is removed after an install and after refused content (exit 3: it would be
    refused again); other failures (a held lock, a failed health check) keep it, so a rerun
    need not upload again.
    """
    f = remote_path(root, STAGING, staging_name)
    cmd = [shlex.quote(edge), "install", '"$F"', "--root", remote_path(root), "--expect-sha256", digest,
           "--keep", str(keep), "--json"]
    if verify_key:
        cmd += ["--verify-key", shlex.quote(verify_key)]
    if health_check:
        cmd += ["--health-check", "--health-steps", str(health_steps), "--health-timeout", f"{health_timeout:g}"]
    return "; ".join([
        f"F={f}",
        "h=$( (sha256sum \"$F\" 2>/dev/null || shasum -a 256 \"$F\") | cut -c1-64)",
        f"if [ \"$h\" != {digest} ]; then rm -f \"$F\"; echo \"uploaded sha256 $h\" >&2; exit {_HASH_MISMATCH}; fi",
        " ".join(cmd),
        "rc=$?",
        "if [ $rc -eq 0 ] || [ $rc -eq 3 ]; then rm -f \"$F\"; fi",
        "exit $rc",
    ])


def _remove_staged(t: SshTarget, root: str, staging_name: str, timeout: float) -> None:
    t.run(f"rm -f {remote_path(root, STAGING, staging_name)}", timeout=timeout, what="removing the staged upload")


def _remote_error(stderr: str) -> tuple[str, str | None]:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    errs = [i for i, ln in enumerate(lines) if ln.startswith(("error:", "internal error:"))]
    if not errs:
        return (lines[-1] if lines else "no message"), None
    i = errs[-1]
    msg = lines[i].split(":", 1)[1].strip()
    hint = (lines[i + 1].strip().removeprefix("hint:").strip()
            if i + 1 < len(lines) and "hint:" in lines[i + 1] else None)
    return msg, hint


_CONTROL_PREFIX = "edge-sdk-ssh-"


def _remove_stale_control_dirs() -> None:
    """Remove the ssh control folders of flashes that were killed (their pid is gone)."""
    from edge_sdk.bundle import _pid_alive

    for p in Path(tempfile.gettempdir()).glob(f"{_CONTROL_PREFIX}*"):
        pid = p.name[len(_CONTROL_PREFIX):].split("-", 1)[0]
        try:
            mine = p.stat().st_uid == os.getuid()
        except OSError:
            continue
        if mine and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def flash(package: str | os.PathLike, host: str, *, port: int | None = None, root: str = DEFAULT_ROOT,
          identity: str | None = None, ssh_config: str | None = None, ssh_options: list[str] | None = None,
          remote_edge_sdk: str = "edge-sdk", keep: int = DEFAULT_KEEP, verify_key: str | None = None,
          remote_verify_key: str | None = None, health_check: bool = False, health_steps: int = 1,
          health_timeout: float = 120.0, transfer: str = "auto", bwlimit: int | None = None,
          service: bool = False, app: str | None = None, unit_dir: str | None = None, service_start: bool = True,
          memory_max: str | None = None, timeout: float = 3600.0, connect_timeout: int = 15,
          progress=None) -> dict[str, Any]:
    """Upload ``package`` to ``host`` and install it under ``root`` there. Returns what is now current."""
    say = progress or (lambda _msg: None)
    local = Path(package)
    if transfer not in ("auto", "rsync", "ssh"):
        raise DeployError(f"unknown transfer {transfer!r}", hint="auto, rsync or ssh")
    # Checked here, before any connection: the board would refuse them only after the upload.
    check_install_options(keep=keep, health_steps=health_steps, health_timeout=health_timeout)
    check_seconds(timeout, option="timeout", bounds=FLASH_TIMEOUT)
    check_count(connect_timeout, option="connect_timeout (--connect-timeout)", bounds=CONNECT_TIMEOUT)
    info = read_package(local, verify_key=verify_key)  # never upload what would be refused
    _remove_stale_control_dirs()
    # Short: a socket path has a ~100 byte limit. The pid lets a later flash remove it if we are killed.
    control_dir = tempfile.mkdtemp(prefix=f"{_CONTROL_PREFIX}{os.getpid()}-")
    t = SshTarget(host, port, identity, ssh_config, list(ssh_options or []), connect_timeout,
                  control_path=os.path.join(control_dir, "cm"))
    try:
        return _flash(t, local, info, root=root, remote_edge_sdk=remote_edge_sdk, keep=keep,
                      remote_verify_key=remote_verify_key, health_check=health_check, health_steps=health_steps,
                      health_timeout=health_timeout, transfer=transfer, bwlimit=bwlimit, service=service, app=app,
                      unit_dir=unit_dir, service_start=service_start, memory_max=memory_max, timeout=timeout,
                      say=say)
    finally:
        try:
            t.close()
        except (OSError, subprocess.SubprocessError):
            pass
        shutil.rmtree(control_dir, ignore_errors=True)


def _flash(t: SshTarget, local: Path, info, *, root: str, remote_edge_sdk: str, keep: int,
           remote_verify_key: str | None, health_check: bool, health_steps: int, health_timeout: float,
           transfer: str, bwlimit: int | None, service: bool, app: str | None, unit_dir: str | None,
           service_start: bool, memory_max: str | None, timeout: float, say) -> dict[str, Any]:
    host = t.host
    size = local.stat().st_size
    digest = sha256_file(local)
    staging_name = f"{digest[:32]}.tar.part"
    step_timeout = min(timeout, 120.0)
    t0 = time.monotonic()

    say(f"checking {host}")
    facts = _preflight(t, root, staging_name, remote_edge_sdk, step_timeout)
    req = info.doc.get("requirements") or {}
    if facts.edge_sdk is None:
        hints = req.get("install") or {}
        how = "; or ".join(hints.values()) or "pip install edge-sdk"
        raise DeployError(f"edge-sdk is not installed on {host} (no `{remote_edge_sdk}` command there)",
                          hint=f"install it on the board for {req.get('board', 'its')} runtime: {how}; "
                               "or point --remote-edge-sdk at its path")
    if not facts.mkdir_ok:
        raise DeployError(f"cannot create {root}/staging on {host}", hint="choose a --root the ssh user can write")
    staged = facts.staged if facts.staged <= size else 0
    need = (size - staged) + info.total_bytes + 1024 * 1024
    if facts.free_bytes is not None and facts.free_bytes < need:
        raise DeployError(f"not enough disk space on {host} under {root}: the upload and the release need "
                          f"{need / 1e6:.1f} MB, {facts.free_bytes / 1e6:.1f} MB is free",
                          hint="free space on the board (lower --keep prunes old releases) or choose another --root")
    use_rsync = transfer == "rsync" or (transfer == "auto" and facts.rsync and shutil.which("rsync"))
    if transfer == "rsync" and not (facts.rsync and shutil.which("rsync")):
        raise DeployError(f"rsync is missing {'on ' + host if not facts.rsync else 'here'}",
                          hint="install rsync, or pass --transfer ssh")

    if facts.staged > size:  # not a prefix of this package: start over
        _remove_staged(t, root, staging_name, step_timeout)
    sent = 0
    upload_s = 0.0
    for attempt in (1, 2):
        say(f"uploading {size / 1e6:.1f} MB to {host}" + (f" (resuming at {staged / 1e6:.1f} MB)" if staged else ""))
        t_up = time.monotonic()
        if use_rsync:
            sent += _upload_rsync(t, local, root, staging_name, bwlimit, timeout)
        else:
            sent += _upload_ssh(t, local, root, staging_name, staged if attempt == 1 else 0, bwlimit, timeout)
        upload_s += time.monotonic() - t_up
        say(f"installing on {host}")
        proc = t.run(_install_script(root, staging_name, digest, remote_edge_sdk, keep, remote_verify_key,
                                     health_check, health_steps, health_timeout), timeout=timeout,
                     what="edge-sdk install")
        if proc.returncode != _HASH_MISMATCH:
            break
        if attempt == 2:  # the script removed the bad copy
            raise DeployError(f"hash mismatch: the package uploaded to {host} differs from {local} (sha256)",
                              hint="the link or the board's storage corrupts data; check it and flash again")
    stdout, stderr = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        msg, hint = _remote_error(stderr)
        still = f"; {host} still runs release {facts.current}" if facts.current else ""
        raise DeployError(f"install on {host} failed: {msg}{still}", hint=hint)
    try:
        result = json.loads(stdout[stdout.index("{"):])
    except ValueError:
        raise DeployError(f"edge-sdk install on {host} printed no JSON summary: {stdout.strip()[-300:]}") from None

    summary: dict[str, Any] = {
        "host": host, "root": facts.root_abs, "release": result.get("release"), "name": result.get("name"),
        "previous": result.get("previous"), "status": result.get("status"), "board_edge_sdk": facts.edge_sdk,
        "transfer": "rsync" if use_rsync else "ssh", "package_bytes": size, "resumed_from": staged,
        "bytes_sent": sent, "upload_seconds": round(upload_s, 3), "seconds": round(time.monotonic() - t0, 3),
        "health": result.get("health"), "removed": result.get("removed", [])}
    if service:
        summary["service"] = _install_service(t, info.doc.get("name") or "app", facts, remote_edge_sdk, app,
                                              unit_dir, service_start, memory_max, step_timeout)
    return summary


def _install_service(t: SshTarget, name: str, facts: BoardFacts, edge: str, app: str | None, unit_dir: str | None,
                     start: bool, memory_max: str | None, timeout: float) -> dict[str, Any]:
    """Write the unit file on the board (temp name, then rename), and (re)start it where systemd runs."""
    from edge_sdk.deploy.service import render_unit, unit_name

    root = facts.root_abs
    bundle = f"{root}/{CURRENT}/{BUNDLE_DIR}"
    oneshot = app is None
    if app is None:  # no app given: one generation per start, written into the root
        if not edge.startswith("/"):
            raise DeployError("--service without --app needs --remote-edge-sdk as an absolute path",
                              hint="or give --app '/usr/bin/python3 /opt/myapp/serve.py {bundle}'")
        app = f"{shlex.quote(edge)} run {{bundle}} --out {shlex.quote(root + '/output.png')}"
    system = facts.uid == 0
    unit = unit_name(name)
    text = render_unit(name=name, root=root, bundle=bundle, app=app, oneshot=oneshot, memory_max=memory_max,
                       wanted_by="multi-user.target" if system else "default.target")
    folder = unit_dir or ("/etc/systemd/system" if system else "~/.config/systemd/user")
    d = remote_path(folder)
    user_flag = "" if system else " --user"
    script = (f"mkdir -p {d} && cat > {d}/.{unit}.tmp && mv -f {d}/.{unit}.tmp {d}/{unit} && echo written=1")
    if start:
        script += (f"; if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then "
                   f"systemctl{user_flag} daemon-reload && systemctl{user_flag} enable {unit} >/dev/null 2>&1 && "
                   f"systemctl{user_flag} restart {unit} && echo started=1; else echo started=0; fi")
    proc = t.run(script, stdin=_bytes_stdin(text.encode()), timeout=timeout, what="writing the service unit")
    out = proc.stdout.decode(errors="replace")
    if "written=1" not in out:
        raise DeployError(f"could not write the unit {unit} into {folder} on {t.host}: "
                          f"{proc.stderr.decode(errors='replace').strip()[-300:]}",
                          hint="a system unit needs root; give --unit-dir, or flash as a user with a user unit")
    if start and "started=1" not in out and "started=0" not in out:
        raise DeployError(f"the unit {unit} was written on {t.host} but did not start: "
                          f"{proc.stderr.decode(errors='replace').strip()[-300:]}",
                          hint=f"look at `journalctl{user_flag} -u {unit}` on the board")
    return {"unit": unit, "path": f"{folder}/{unit}", "started": "started=1" in out, "text": text}


def _bytes_stdin(data: bytes):
    """A readable file holding ``data``, for a subprocess's stdin."""
    f = tempfile.TemporaryFile()
    f.write(data)
    f.seek(0)
    return f

