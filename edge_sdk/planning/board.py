"""Board profiles: one TOML file per board (``boards/*.toml``), loaded, validated and detected.

A profile says how much memory edge-sdk may use on a board (the cap; on Jetson CPU and GPU share
it), what the CPU can do, which runtimes and devices to prefer, which precision each component
should run in, how many threads, and the decode tile limits. Every figure carries its source in
the file. ``load_board`` takes a built-in name (``rpi5-8gb``) or the path of a user's own file;
``edge_sdk.planning.board_detect.detect_board`` guesses which built-in profile fits the machine it runs on.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edge_sdk.errors import PlanError
from edge_sdk.units import MB

SCHEMA = 1
ROLES = ("denoiser", "decoder", "encoder", "text_encoder", "generator")
KNOWN_ISA = {"neon", "fp16", "dotprod", "i8mm", "sve", "sse4_2", "avx2", "avx512f", "avx512_vnni", "avx_vnni",
             "amx"}
# Extra folders of profiles, beside the built-in ones (os.pathsep-separated).
PATH_ENV = "EDGE_SDK_BOARD_PATH"
# Finite bounds (hardening class 6): far above any real board, far below what overflows arithmetic.
MAX_PROFILE_BYTES = 256 * 1024
MAX_RAM_MB = 16 * 1024 * 1024  # 16 TiB
MAX_CPUS = 4096
MAX_TILE = 1 << 16

# Which fields a profile has: table -> {key: (type(s), required)}. Anything else is a typo.
_FIELDS: dict[str, dict[str, tuple[Any, bool]]] = {
    "": {"schema": (int, True), "name": (str, True), "title": (str, True), "family": (str, True),
         "notes": (str, False)},
    "memory": {"ram_mb": ((int, str), True), "cap_mb": (int, False), "cap_fraction": (float, False),
               "unified": (bool, True), "source": (str, True), "cap_source": (str, True)},
    "cpu": {"arch": (str, True), "cores": ((int, str), True), "model": (str, True), "isa": (list, True),
            "source": (str, True)},
    "runtimes": {"preference": (list, True), "source": (str, False)},
    "precision": {**{r: (list, False) for r in ROLES}, "default": (list, True), "source": (str, False)},
    "threads": {"default": ((int, str), True), "source": (str, False)},
    "tiling": {"min_tile": (int, True), "max_tile": (int, True), "overlap_fraction": (float, True),
               "source": (str, False)},
    "detect": {"device_tree": (list, False), "compatible": (list, False), "cpu_model": (list, False),
               "jetson_release": (list, False), "arch": (list, False), "devices": (list, False),
               "fallback": (bool, False)},
}
_ACCEL_FIELDS = {"kind": (str, True), "name": (str, True), "peak": (str, False), "source": (str, True)}


@dataclass(frozen=True)
class BoardProfile:
    name: str
    title: str
    family: str
    path: str
    ram_bytes: int
    cap_bytes: int
    unified: bool
    cpu_arch: str
    cpu_cores: int
    cpu_model: str
    isa: tuple[str, ...]
    accelerators: tuple[dict[str, str], ...]
    runtimes: tuple[tuple[str, str], ...]  # (runtime, device), best first
    precision: dict[str, tuple[str, ...]]  # role (or "default") -> precisions, best first
    threads: int
    min_tile: int  # latent cells
    max_tile: int
    overlap_fraction: float
    detect: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    notes: str = ""

    def precisions_for(self, role: str) -> tuple[str, ...]:
        return self.precision.get(role, self.precision["default"])

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["runtimes"] = [f"{r}:{dev}" for r, dev in self.runtimes]
        return d


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: taskset, cpusets), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _count_or_detect(path: str, field_name: str, value: int | str) -> int:
    """A core or thread count: a positive integer, or "detect" for this machine's usable CPUs."""
    if value == "detect":  # a generic host: as many as this process may use
        return usable_cpus()
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_CPUS:
        return value
    raise PlanError(f"{path} {field_name}: must be a positive integer or \"detect\", got {value!r}"[:300]
                    + f" (at most {MAX_CPUS})")


def _check(where: str, table: dict[str, Any], spec: dict[str, tuple[Any, bool]]) -> None:
    for key, value in table.items():
        if isinstance(value, dict) and key in _FIELDS:
            continue
        if key == "accelerators" and spec is _FIELDS[""]:
            continue
        if key not in spec:
            raise PlanError(f"{where}: unknown field {key!r}", hint=f"fields here: {', '.join(sorted(spec))}")
        types = spec[key][0]
        if isinstance(value, bool) and types is not bool and bool not in (types if isinstance(types, tuple) else ()):
            raise PlanError(f"{where}: field {key!r} must not be a boolean")
        if types is float and isinstance(value, int):
            continue
        if not isinstance(value, types):
            raise PlanError(f"{where}: field {key!r} has {type(value).__name__} {value!r}, expected "
                            f"{getattr(types, '__name__', None) or ' or '.join(t.__name__ for t in types)}")
    missing = [k for k, (_, req) in spec.items() if req and k not in table]
    if missing:
        raise PlanError(f"{where}: missing field(s) {', '.join(missing)}")


def parse_profile(data: dict[str, Any], *, path: str) -> BoardProfile:
    """Validate a parsed profile; every problem is a PlanError naming the file and the field."""
    _check(path, data, _FIELDS[""])
    if data["schema"] != SCHEMA:
        raise PlanError(f"{path}: schema {data['schema']} is not supported (this edge-sdk reads {SCHEMA})")
    for table in ("memory", "cpu", "runtimes", "precision", "threads", "tiling"):
        if not isinstance(data.get(table), dict):
            raise PlanError(f"{path}: missing table [{table}]")
    for table, spec in _FIELDS.items():
        if table and table in data:
            _check(f"{path} [{table}]", data[table], spec)
    mem, cpu, tiling = data["memory"], data["cpu"], data["tiling"]
    ram = mem["ram_mb"]
    if ram == "detect":  # a generic host: whatever this machine has
        import psutil

        ram_bytes = int(psutil.virtual_memory().total)
    elif isinstance(ram, int) and not isinstance(ram, bool) and 0 < ram <= MAX_RAM_MB:
        ram_bytes = ram * MB
    else:
        raise PlanError(f"{path} [memory]: ram_mb must be a number of MB from 1 to {MAX_RAM_MB} or \"detect\", "
                        f"got {ram!r}"[:300])
    if ("cap_mb" in mem) == ("cap_fraction" in mem):
        raise PlanError(f"{path} [memory]: give exactly one of cap_mb and cap_fraction")
    if "cap_fraction" in mem and not 0 < mem["cap_fraction"] <= 1:
        raise PlanError(f"{path} [memory]: cap_fraction must be in (0, 1], got {mem['cap_fraction']!r}")
    if "cap_mb" in mem and not 0 < mem["cap_mb"] <= MAX_RAM_MB:
        raise PlanError(f"{path} [memory]: cap_mb must be from 1 to {MAX_RAM_MB}, got {mem['cap_mb']!r}")
    cap = mem["cap_mb"] * MB if "cap_mb" in mem else int(ram_bytes * float(mem["cap_fraction"]))
    if not 0 < cap <= ram_bytes:
        raise PlanError(f"{path} [memory]: the cap ({cap // MB} MB) must be above 0 and at most the RAM "
                        f"({ram_bytes // MB} MB)")
    if not all(isinstance(f, str) for f in cpu["isa"]):
        raise PlanError(f"{path} [cpu]: isa must be a list of strings")
    bad_isa = [f for f in cpu["isa"] if f not in KNOWN_ISA]
    if bad_isa:
        raise PlanError(f"{path} [cpu]: unknown ISA feature(s) {bad_isa}",
                        hint=f"known: {', '.join(sorted(KNOWN_ISA))}")
    cores = _count_or_detect(path, "[cpu] cores", cpu["cores"])
    threads = _count_or_detect(path, "[threads] default", data["threads"]["default"])
    runtimes = []
    for item in data["runtimes"]["preference"]:
        if not isinstance(item, str) or item.count(":") != 1 or not all(item.split(":")):
            raise PlanError(f"{path} [runtimes]: preference entry {item!r} is not RUNTIME:DEVICE, e.g. onnxruntime:cpu")
        r, d = item.split(":")
        runtimes.append((r, d))
    if not runtimes:
        raise PlanError(f"{path} [runtimes]: the preference list is empty")
    from edge_sdk.planning.plan import PRECISION_ORDER

    precision = {}
    for role, order in data["precision"].items():
        if role == "source":
            continue
        if not isinstance(order, list) or not all(isinstance(p, str) for p in order):
            raise PlanError(f"{path} [precision]: {role} must be a list of precision names")
        bad = [p for p in order if p not in PRECISION_ORDER]
        if bad or not order:
            raise PlanError(f"{path} [precision]: {role} lists unknown or no precisions {bad}",
                            hint=f"precisions: {', '.join(PRECISION_ORDER)}")
        precision[role] = tuple(order)
    if not 1 <= tiling["min_tile"] <= tiling["max_tile"] <= MAX_TILE:
        raise PlanError(f"{path} [tiling]: need 1 <= min_tile <= max_tile <= {MAX_TILE}, "
                        f"got {tiling['min_tile']}, {tiling['max_tile']}")
    if not 0 <= tiling["overlap_fraction"] < 0.5:
        raise PlanError(f"{path} [tiling]: overlap_fraction must be in [0, 0.5), got {tiling['overlap_fraction']}")
    accels = data.get("accelerators", [])
    if not isinstance(accels, list):
        raise PlanError(f"{path}: accelerators must be an array of tables ([[accelerators]])")
    for i, a in enumerate(accels):
        _check(f"{path} [[accelerators]] #{i + 1}", a, _ACCEL_FIELDS)
    sources = {t: data[t]["source"] for t in ("memory", "cpu", "runtimes", "precision", "threads", "tiling")
               if "source" in data[t]}
    sources["memory_cap"] = mem["cap_source"]
    return BoardProfile(
        name=data["name"], title=data["title"], family=data["family"], path=path, ram_bytes=ram_bytes,
        cap_bytes=cap, unified=mem["unified"], cpu_arch=cpu["arch"], cpu_cores=cores, cpu_model=cpu["model"],
        isa=tuple(cpu["isa"]), accelerators=tuple(dict(a) for a in accels), runtimes=tuple(runtimes),
        precision=precision, threads=threads, min_tile=tiling["min_tile"],
        max_tile=tiling["max_tile"], overlap_fraction=float(tiling["overlap_fraction"]),
        detect=dict(data.get("detect", {})), sources=sources, notes=data.get("notes", ""))


def _read(path: Path, where: str) -> BoardProfile:
    from edge_sdk.guard.safeio import load_toml  # no link, regular file, size cap, no nan/inf

    data = load_toml(path, max_bytes=MAX_PROFILE_BYTES, error=PlanError, what="board profile")
    return parse_profile(data, path=where)


def _profile_files() -> dict[str, Path]:
    """name -> file for the built-in profiles and those in $EDGE_SDK_BOARD_PATH (which win)."""
    files: dict[str, Path] = {}
    folders = [Path(str(resources.files("edge_sdk.boards")))]
    folders += [Path(p) for p in os.environ.get(PATH_ENV, "").split(os.pathsep) if p]
    for folder in folders:
        if folder.is_dir():
            for f in sorted(folder.glob("*.toml")):
                files[f.stem] = f
    return files


def board_names() -> list[str]:
    return sorted(_profile_files())


def list_boards() -> list[BoardProfile]:
    return [load_board(n) for n in board_names()]


def load_board(name_or_path: str | os.PathLike) -> BoardProfile:
    """A profile by name (built-in or on $EDGE_SDK_BOARD_PATH) or by the path of a .toml file."""
    text = str(name_or_path)
    p = Path(text)
    if text.endswith(".toml") or os.sep in text or p.is_file():
        if not os.path.lexists(p):
            raise PlanError(f"board profile file {p} does not exist")
        return _read(p, str(p))
    files = _profile_files()
    if text not in files:
        import difflib

        close = difflib.get_close_matches(text, files, n=3)
        raise PlanError(f"unknown board {text!r}",
                        hint=(f"did you mean {', '.join(close)}? " if close else "")
                        + "see `edge-sdk boards`, or give the path of your own profile .toml")
    prof = _read(files[text], files[text].name)
    if prof.name != text:
        raise PlanError(f"board profile {files[text]} is named {prof.name!r}; the file must be {prof.name}.toml")
    return prof


# -- detection: edge_sdk.planning.board_detect (kept importable from here for existing callers) ----------
def __getattr__(name: str) -> Any:
    if name in ("MachineFacts", "machine_facts", "detect_board"):
        from edge_sdk.planning import board_detect

        return getattr(board_detect, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
