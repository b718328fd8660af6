"""Board detection: which built-in profile fits the machine, from device-tree and ``/proc`` contents.

Reads, under a root folder (``/`` on a board; a recorded tree in tests, or ``$EDGE_SDK_DETECT_ROOT``):
``proc/device-tree/model`` and ``compatible`` (NUL-separated), ``etc/nv_tegra_release``,
``proc/cpuinfo`` (Raspberry Pi ``Revision``/``Model`` lines, CPU parts and features) and
``proc/meminfo``. Two facts are exact where present and win over MemTotal: the RAM size coded in a
Raspberry Pi revision code, and the Jetson module part number (``p3767-0003`` ...) in the
compatible list. The CPU architecture comes from the cpuinfo of a recorded tree, so a Pi running
32-bit Raspberry Pi OS is seen as armv7l (and ``doctor`` says what installs there).
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

from edge_sdk.planning.board import MB, list_boards

ROOT_ENV = "EDGE_SDK_DETECT_ROOT"

# Raspberry Pi new-style revision codes: bits 20-22 are the memory size.
# Source: raspberrypi/documentation, computers/raspberry-pi/revision-codes.adoc.
_PI_RAM_MB = {0: 256, 1: 512, 2: 1024, 3: 2048, 4: 4096, 5: 8192, 6: 16384}

# Jetson module part number (in the device-tree compatible list) -> (module, RAM MB, profile).
# Source: rbonghi/jetson_stats jtop/core/jetson_variables.py MODULE_NAME_TABLE (from NVIDIA's
# L4T quick-start guides). A profile of None: no built-in profile for that module.
JETSON_MODULES: dict[str, tuple[str, int, str | None]] = {
    "p3767-0005": ("Jetson Orin Nano (developer kit module, 8 GB)", 8192, "jetson-orin-nano-8gb"),
    "p3767-0004": ("Jetson Orin Nano 4GB", 4096, "jetson-orin-nano-4gb"),
    "p3767-0003": ("Jetson Orin Nano 8GB", 8192, "jetson-orin-nano-8gb"),
    "p3767-0001": ("Jetson Orin NX 8GB", 8192, None),
    "p3767-0000": ("Jetson Orin NX 16GB", 16384, "jetson-orin-nx-16gb"),
    "p3701-0005": ("Jetson AGX Orin 64GB", 65536, "jetson-agx-orin-64gb"),
    "p3701-0004": ("Jetson AGX Orin 32GB", 32768, None),
    "p3701-0000": ("Jetson AGX Orin (developer kit module, 32 GB)", 32768, None),
    "p3448-0000": ("Jetson Nano 4GB (developer kit)", 4096, "jetson-nano-4gb"),
    "p3448-0002": ("Jetson Nano 4GB (16 GB eMMC)", 4096, "jetson-nano-4gb"),
    "p3448-0003": ("Jetson Nano 2GB", 2048, None),
}

# ARM CPU part numbers (cpuinfo "CPU part", implementer 0x41), for the reasons doctor prints.
_ARM_PARTS = {"0xd03": "Cortex-A53", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57", "0xd08": "Cortex-A72",
              "0xd0b": "Cortex-A76", "0xd42": "Cortex-A78AE", "0xd41": "Cortex-A78"}


@dataclass
class MachineFacts:
    """What detection looks at; read from a root folder so tests can give a recorded one."""

    device_tree_model: str = ""
    compatible: list[str] = field(default_factory=list)
    jetson_release: str = ""  # e.g. "R36"
    jetson_module: str = ""  # e.g. "p3767-0003"
    cpu_model: str = ""
    cpu_cores: list[str] = field(default_factory=list)  # e.g. ["Cortex-A76", "Cortex-A55"]
    cpu_flags: set[str] = field(default_factory=set)
    arch: str = ""
    ram_bytes: int = 0
    ram_source: str = ""  # "MemTotal", "Raspberry Pi revision code" or "Jetson module"
    pi_revision: str = ""
    devices: list[str] = field(default_factory=list)  # present accelerator device nodes


def default_root() -> str:
    return os.environ.get(ROOT_ENV) or "/"


def _text(p: Path) -> str:
    # Never follow a link out of a recorded tree: on a board /proc/device-tree itself is a link.
    try:
        return p.read_bytes().replace(b"\x00", b"\n").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def pi_ram_mb(revision: str) -> int | None:
    """RAM in MB coded in a new-style Raspberry Pi revision code (bit 23 set), else None."""
    try:
        code = int(revision, 16)
    except ValueError:
        return None
    if not code & (1 << 23):  # old-style codes (Pi 1 era) do not carry the size this way
        return None
    return _PI_RAM_MB.get((code >> 20) & 7)


def _arch_from_cpuinfo(text: str, flags: set[str]) -> str:
    m = re.search(r"^CPU architecture\s*:\s*(\d+)", text, re.M)
    if m:
        # A 64-bit kernel lists "asimd"; a 32-bit userland kernel lists "neon vfpv4 ... " and model "ARMv7".
        if m.group(1) == "8" and "asimd" in flags:
            return "aarch64"
        return "armv7l"
    if "sse2" in flags:
        return "x86_64"
    if "asimd" in flags:
        return "aarch64"
    return "armv7l" if "neon" in flags else ""


def machine_facts(root: str | os.PathLike | None = None) -> MachineFacts:
    root = Path(root if root is not None else default_root())
    f = MachineFacts()
    f.device_tree_model = _text(root / "proc/device-tree/model") or _text(root / "sys/firmware/devicetree/base/model")
    f.compatible = [c for c in (_text(root / "proc/device-tree/compatible")
                                or _text(root / "sys/firmware/devicetree/base/compatible")).splitlines() if c]
    rel = _text(root / "etc/nv_tegra_release")
    if rel.startswith("# R"):
        f.jetson_release = rel[2:].split()[0]
    for c in f.compatible:
        m = re.search(r"(p\d{4}-\d{4})$", c)
        if m and m.group(1) in JETSON_MODULES:
            f.jetson_module = m.group(1)
            break
    cpuinfo = _text(root / "proc/cpuinfo")
    parts: list[str] = []
    pi_model = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in ("model name", "cpu model") and not f.cpu_model:
            f.cpu_model = value
        elif key == "hardware" and not f.cpu_model and value != "BCM2835":  # every Pi says BCM2835
            f.cpu_model = value
        elif key in ("flags", "features"):
            f.cpu_flags |= set(value.split())
        elif key == "cpu part" and _ARM_PARTS.get(value) and _ARM_PARTS[value] not in parts:
            parts.append(_ARM_PARTS[value])
        elif key == "revision":
            f.pi_revision = value
        elif key == "model":  # Raspberry Pi kernels repeat the device-tree model here
            pi_model = value
    f.cpu_cores = parts
    if not f.device_tree_model and pi_model:
        f.device_tree_model = pi_model
    for line in _text(root / "proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            f.ram_bytes, f.ram_source = int(line.split()[1]) * 1024, "MemTotal"
    if f.pi_revision and "raspberry pi" in f.device_tree_model.lower():
        mb = pi_ram_mb(f.pi_revision)
        if mb:
            f.ram_bytes, f.ram_source = mb * MB, "Raspberry Pi revision code"
    if f.jetson_module:
        f.ram_bytes, f.ram_source = JETSON_MODULES[f.jetson_module][1] * MB, "Jetson module"
    if str(root) == "/":
        f.arch = platform.machine()
    else:
        f.arch = _arch_from_cpuinfo(cpuinfo, f.cpu_flags)
    for dev in ("dev/accel/accel0", "dev/nvhost-gpu", "dev/nvgpu/igpu0", "dev/rknpu", "dev/dri/renderD129"):
        if (root / dev).exists():
            f.devices.append("/" + dev)
    return f


def _reasons(f: MachineFacts) -> list[str]:
    reasons = []
    if f.device_tree_model:
        reasons.append(f"device-tree model: {f.device_tree_model!r}")
    if f.jetson_module:
        reasons.append(f"Jetson module {f.jetson_module}: {JETSON_MODULES[f.jetson_module][0]}")
    if f.jetson_release:
        reasons.append(f"Jetson release file: L4T {f.jetson_release}")
    cpu = f.cpu_model or " + ".join(f.cpu_cores)
    if cpu or f.arch:
        reasons.append(f"CPU: {cpu or 'unknown'}" + (f" ({f.arch})" if f.arch else ""))
    if f.ram_bytes:
        reasons.append(f"RAM: {f.ram_bytes / MB:.0f} MB ({f.ram_source or 'MemTotal'})")
    if f.devices:
        reasons.append(f"accelerator devices: {', '.join(f.devices)}")
    return reasons


def detect_board(root: str | os.PathLike | None = None, *,
                 facts: MachineFacts | None = None) -> tuple[str | None, list[str]]:
    """The built-in profile that fits this machine best, and the reasons (for `edge-sdk doctor`).

    A Jetson module part number names its profile outright. Otherwise each profile's ``[detect]``
    keys are scored: device-tree model (needed when the profile lists one), compatible strings,
    CPU model, L4T release, accelerator device nodes, a generic fallback per architecture; among
    equals the RAM variant closest to this machine's wins. Returns (None, reasons) when nothing fits.
    """
    f = facts or machine_facts(root)
    reasons = _reasons(f)
    profiles = list_boards()
    if f.jetson_module:
        module, _ram, name = JETSON_MODULES[f.jetson_module]
        if name is None:
            reasons.append(f"{module} has no built-in profile: copy the closest one from `edge-sdk boards`, "
                           "set its RAM and cap, and pass its path")
            return None, reasons
        reasons.append(f"{name} fits: Jetson module {f.jetson_module}")
        return name, reasons
    best: tuple[float, str] | None = None
    why = ""
    # A 32-bit userland on a 64-bit board is still that board.
    arch = "aarch64" if f.arch in ("armv7l", "armv8l") else f.arch
    for prof in profiles:
        d = prof.detect
        score = 0.0
        hits = []
        if d.get("arch") and arch and arch not in d["arch"]:
            continue
        for key, value, weight in (("device_tree", f.device_tree_model, 10), ("cpu_model", f.cpu_model, 5)):
            if d.get(key):
                m = [s for s in d[key] if s.lower() in value.lower()]
                if m:
                    score, hits = score + weight, hits + [f"{key} contains {m[0]!r}"]
                elif key == "device_tree" and not (d.get("compatible")
                                                   and any(c in f.compatible for c in d["compatible"])):
                    score -= 20  # a profile keyed on a device-tree model needs that model (or its SoC)
        if d.get("compatible") and any(c in f.compatible for c in d["compatible"]):
            score, hits = score + 8, hits + ["device-tree compatible matches"]
        if d.get("jetson_release"):
            if any(f.jetson_release.startswith(r) for r in d["jetson_release"]):
                score, hits = score + 3, hits + [f"L4T {f.jetson_release}"]
            else:
                score -= 20
        if d.get("devices"):
            if any(dev in f.devices for dev in d["devices"]):
                score, hits = score + 6, hits + ["accelerator device present"]
            else:
                score -= 6
        if d.get("fallback"):
            score += 0.5
            hits.append("generic fallback for this architecture")
        if score <= 0:
            continue
        if f.ram_bytes:  # among equals, the variant whose RAM is closest (MemTotal is a bit under nominal)
            score -= abs(prof.ram_bytes - f.ram_bytes) / prof.ram_bytes
        if best is None or score > best[0]:
            best, why = (score, prof.name), "; ".join(hits)
    if best is None:
        reasons.append("no built-in profile matches; copy the closest one from `edge-sdk boards` and pass its path")
        return None, reasons
    reasons.append(f"{best[1]} fits: {why}")
    if f.arch in ("armv7l", "armv8l"):
        reasons.append("32-bit ARM userland: see `edge-sdk doctor` for the runtimes that install here")
    return best[1], reasons


def resolve_board(name_or_path: str) -> str:
    """A profile name or path as given, or for ``auto`` the detected one (PlanError when none fits)."""
    if name_or_path != "auto":
        return name_or_path
    from edge_sdk.errors import PlanError

    name, reasons = detect_board()
    if name is None:
        raise PlanError("--board auto: no built-in board profile matches this machine (" + "; ".join(reasons) + ")",
                        hint="pass --board NAME (see `edge-sdk boards`) or the path of your own profile .toml")
    return name
