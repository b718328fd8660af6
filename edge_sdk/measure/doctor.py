"""What can run here: runtimes, their devices and providers, CPU features, the board. For `edge-sdk doctor`."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from edge_sdk import __version__
from edge_sdk.runtimes.registry import available_runtimes, install_hint, is_host_only

# Features that decide which kernels and precisions are fast, by /proc/cpuinfo name.
# x86: 'flags'; ARM: 'Features' (asimd = NEON on aarch64, asimddp = int8 dot product, asimdhp = fp16 math).
CPU_FEATURES = {
    "avx2": ("avx2",), "avx512f": ("avx512f",), "avx512_vnni": ("avx512_vnni",), "avx_vnni": ("avx_vnni",),
    "avx512_bf16": ("avx512_bf16",), "avx512_fp16": ("avx512_fp16",), "amx": ("amx_tile", "amx_int8", "amx_bf16"),
    "f16c": ("f16c",), "neon": ("neon", "asimd"), "dotprod": ("asimddp",), "fp16": ("fphp", "asimdhp"),
    "i8mm": ("i8mm",), "bf16": ("bf16",), "sve": ("sve",),
}


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """Model name, logical cores and the features above that this CPU has."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    flags: set[str] = set()
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):
            flags.update(value.split())
        elif key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
    if not model:
        model = platform.processor() or platform.machine()
    present = sorted(name for name, aliases in CPU_FEATURES.items() if flags.intersection(aliases))
    return {"model": model, "cores": os.cpu_count(), "machine": platform.machine(), "features": present}


# What installs from PyPI on a 32-bit ARM userland, as found by `scripts/arm64-check --arch armhf`
# (Debian 12 armhf, Python 3.11; benchmarks/results/armhf.json, docs/boards.md).
ARMV7_NOTES = [
    "32-bit ARM (armv7l): PyPI has no onnxruntime or ai-edge-litert wheel for it; tflite-runtime 2.14 has one "
    "(Python 3.11, glibc 2.34+: Raspberry Pi OS / Debian 12) and runs the TFLite artifacts (runtime litert)",
    "numpy, psutil and opencv-python-headless have no armv7l wheel on PyPI: take numpy and psutil from the OS "
    "(apt install python3-numpy python3-psutil; venv --system-site-packages) or piwheels.org, then "
    "pip install --no-deps edge-sdk and pip install click jsonschema tflite-runtime; only PNG writing and "
    "img2img need OpenCV",
    "tokenizers did not install binary-only there (its dependencies lack armv7l wheels): text prompts need "
    "prompt_embeds, or a 64-bit OS (Raspberry Pi OS 64-bit runs on the Pi 3/4/5 and Zero 2 W) with "
    "pip install 'edge-sdk[litert,onnxruntime,text]'",
]


def arch_notes(machine: str | None = None) -> list[str]:
    """What to know about installing edge-sdk's runtimes on this CPU architecture."""
    machine = machine or platform.machine()
    if machine in ("armv7l", "armv8l", "armv6l"):
        return list(ARMV7_NOTES)
    return []


def board_info(root: str | None = None) -> dict[str, Any] | None:
    """The matching board profile and why, when the boards module is installed; None otherwise."""
    try:
        from edge_sdk.planning.board_detect import detect_board, machine_facts
    except ImportError:
        return None
    arch = platform.machine()
    try:
        facts = machine_facts(root)
        arch = facts.arch or arch
        found = detect_board(facts=facts)
    except Exception as e:  # noqa: BLE001 - doctor reports, never raises
        return {"name": None, "reasons": [f"board detection failed: {e}"], "arch": arch}
    if isinstance(found, dict):
        name, reasons = found.get("name"), found.get("reasons", [])
    elif isinstance(found, (tuple, list)) and len(found) == 2:
        name, reasons = found
    else:
        name, reasons = getattr(found, "name", found), getattr(found, "reasons", [])
    if isinstance(reasons, str):
        reasons = [reasons]
    return {"name": name, "reasons": list(reasons or []), "arch": arch}


def report() -> dict[str, Any]:
    """Everything `edge-sdk doctor` prints, as data."""
    runtimes = available_runtimes()
    for name, info in runtimes.items():
        if not info.get("available"):
            info.setdefault("install", install_hint(name))
    device_side = [n for n, i in runtimes.items() if i.get("available") and not is_host_only(n)]
    board = board_info()
    return {
        "edge_sdk": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "board": board,
        "arch_notes": arch_notes((board or {}).get("arch")),
        "runtimes": runtimes,
        "usable_device_runtimes": device_side,
    }
