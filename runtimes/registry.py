"""Finding runtimes: the ``edge_sdk.runtimes`` entry point group, built-in adapters included."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from edge_sdk.errors import RuntimeUnavailableError, UsageError
from edge_sdk.runtimes.base import Runtime

GROUP = "edge_sdk.runtimes"
# What to install for each built-in runtime, for error messages.
INSTALL_HINTS = {
    "onnxruntime": "pip install 'edge-sdk[onnxruntime]' (on Jetson: NVIDIA's onnxruntime-gpu wheel for your JetPack)",
    "openvino": "pip install 'edge-sdk[openvino]'",
    "litert": "pip install 'edge-sdk[litert]' (or tflite-runtime on older ARM boards)",
    "torch": "pip install 'edge-sdk[convert]' (host only: the torch reference is for validation)",
}
_extra: dict[str, type[Runtime]] = {}


def register_runtime(name: str, cls: type[Runtime]) -> None:
    """Register an adapter in-process (entry points are the normal way; this is for apps and tests)."""
    _extra[name] = cls


def runtime_names() -> list[str]:
    names = {ep.name for ep in entry_points(group=GROUP)} | set(_extra)
    return sorted(names)


def get_runtime(name: str) -> type[Runtime]:
    """The adapter class registered as ``name``; raises if unknown or its engine is not importable."""
    if name in _extra:
        return _extra[name]
    eps = {ep.name: ep for ep in entry_points(group=GROUP)}
    if name not in eps:
        raise UsageError(f"unknown runtime {name!r}", hint=f"known runtimes: {', '.join(runtime_names())}")
    ep = eps[name]
    try:
        cls = ep.load()
    except ImportError as e:
        raise RuntimeUnavailableError(f"runtime {name!r} cannot be loaded here: {e}",
                                      hint=INSTALL_HINTS.get(name, "install the package that provides it")) from None
    except Exception as e:  # a third-party plugin with a bug must not take the whole registry down
        raise RuntimeUnavailableError(f"runtime {name!r} ({ep.value}) failed to import: {type(e).__name__}: {e}",
                                      hint="fix or uninstall the package that provides it") from None
    if not (isinstance(cls, type) and issubclass(cls, Runtime)):
        raise RuntimeUnavailableError(f"runtime {name!r} ({ep.value}) is not an edge_sdk.runtimes.Runtime subclass",
                                      hint="the entry point must name a class deriving from "
                                           "edge_sdk.runtimes.base.Runtime")
    return cls


def available_runtimes() -> dict[str, dict[str, Any]]:
    """Every registered runtime with its probe result (for `edge-sdk doctor`)."""
    out = {}
    for name in runtime_names():
        try:
            out[name] = get_runtime(name).probe()
        except Exception as e:  # noqa: BLE001 - doctor reports every failure, never raises
            out[name] = {"available": False, "reason": str(e), "version": None, "devices": []}
    return out


def runtime_for_format(fmt: str) -> list[str]:
    """Registered runtimes that open a format, in registration order."""
    names = []
    for name in runtime_names():
        try:
            cls = get_runtime(name)
        except Exception:  # noqa: BLE001
            continue
        if fmt in getattr(cls, "formats", ()):
            names.append(name)
    return names


def open_artifact(path: str | Path, runtime: str, **kwargs: Any) -> Runtime:
    """Open ``path`` with the named runtime; an engine that is not installed says what to install."""
    cls = get_runtime(runtime)
    info = cls.probe()
    if not info.get("available"):
        raise RuntimeUnavailableError(f"runtime {runtime!r} is not usable here: {info.get('reason')}",
                                      hint=INSTALL_HINTS.get(runtime, ""))
    return cls(path, **kwargs)
