"""Finding runtimes: the ``edge_sdk.runtimes`` entry point group, built-in adapters included.

Every fact about an engine (formats, devices, memory, options, install hint) is read from its
adapter class here; adding a runtime is one adapter module plus one entry point.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from edge_sdk.errors import RuntimeUnavailableError, UsageError
from edge_sdk.runtimes.base import Runtime

GROUP = "edge_sdk.runtimes"
_NO_HINT = "install the package that provides it"
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
    except ImportError as e:  # the adapter module itself failed: its class (and hint) is out of reach
        raise RuntimeUnavailableError(f"runtime {name!r} cannot be loaded here: {e}", hint=_NO_HINT) from None
    except Exception as e:  # a third-party plugin with a bug must not take the whole registry down
        raise RuntimeUnavailableError(f"runtime {name!r} ({ep.value}) failed to import: {type(e).__name__}: {e}",
                                      hint="fix or uninstall the package that provides it") from None
    if not (isinstance(cls, type) and issubclass(cls, Runtime)):
        raise RuntimeUnavailableError(f"runtime {name!r} ({ep.value}) is not an edge_sdk.runtimes.Runtime subclass",
                                      hint="the entry point must name a class deriving from "
                                           "edge_sdk.runtimes.base.Runtime")
    return cls


def available_runtimes(names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """Every registered runtime (or those of ``names``) with its probe result (for `edge-sdk doctor`).
    A probe imports the engine's library into this process."""
    out = {}
    wanted = None if names is None else set(names)
    for name in runtime_names() if wanted is None else [n for n in runtime_names() if n in wanted]:
        try:
            out[name] = get_runtime(name).probe()
        except Exception as e:  # noqa: BLE001 - doctor reports every failure, never raises
            out[name] = {"available": False, "reason": str(e), "version": None, "devices": []}
    return out


def _loadable(names: list[str] | None = None) -> list[type[Runtime]]:
    classes = []
    for name in runtime_names() if names is None else names:
        try:
            classes.append(get_runtime(name))
        except Exception:  # noqa: BLE001 - a runtime that cannot load opens nothing here
            continue
    return classes


def runtimes_for_format(fmt: str) -> list[str]:
    """Runtimes the planner may choose for a format, preferred first (each adapter's ``rank``)."""
    classes = [c for c in _loadable() if c.plannable and fmt in c.formats]
    return [c.name for c in sorted(classes, key=lambda c: (c.rank, c.name))]


def runtime_formats(name: str) -> tuple[str, ...]:
    """The formats a runtime opens, preferred first; () when it is unknown, not loadable or not plannable."""
    classes = _loadable([name])
    return tuple(classes[0].formats) if classes and classes[0].plannable else ()


def runtime_rank(name: str) -> int:
    """A runtime's preference among those opening one format (lower first); unknown ones last."""
    classes = _loadable([name])
    return classes[0].rank if classes else 1_000_000


def is_host_only(name: str) -> bool:
    """True for a reference runtime that validates on the host and never runs on a device."""
    classes = _loadable([name])
    return bool(classes and classes[0].host_only)


def install_hint(name: str, default: str = _NO_HINT) -> str:
    """What to install for a runtime, from its adapter (``default`` when it says nothing or is unknown)."""
    classes = _loadable([name])
    return (classes[0].install_hint if classes else "") or default


def _options(name: str, table: str) -> dict[str, Any]:
    classes = _loadable([name])
    return dict(getattr(classes[0], table)) if classes else {}


def memory_facts(name: str) -> dict[str, bool]:
    """What the memory model needs to know of a runtime: ``batch_holds_fixed_once``,
    ``materialises_attention``, and ``releases_scratch`` (it implements ``release_scratch``), the
    generic adapter's values when it is unknown."""
    classes = _loadable([name])
    cls = classes[0] if classes else Runtime
    return {"batch_holds_fixed_once": cls.batch_holds_fixed_once, "materialises_attention": cls.materialises_attention,
            "releases_scratch": cls.release_scratch is not Runtime.release_scratch}


def plan_options(name: str) -> dict[str, Any]:
    """A copy of the session options every plan gives ``name`` ({} when unknown)."""
    return _options(name, "plan_options")


def chained_options(name: str) -> dict[str, Any]:
    """A copy of the session options ``name`` takes when its sessions run in a chain ({} when unknown)."""
    return _options(name, "chained_options")


def streamed_options(name: str) -> dict[str, Any]:
    """A copy of the session options ``name`` takes for a component streamed part by part ({} when unknown)."""
    return _options(name, "streamed_options")


def _usable(runtime: str) -> type[Runtime]:
    cls = get_runtime(runtime)
    info = cls.probe()
    if not info.get("available"):
        raise RuntimeUnavailableError(f"runtime {runtime!r} is not usable here: {info.get('reason')}",
                                      hint=cls.install_hint)
    return cls


def open_artifact(path: str | Path, runtime: str, **kwargs: Any) -> Runtime:
    """Open ``path`` with the named runtime; an engine that is not installed says what to install."""
    return _usable(runtime)(path, **kwargs)


def open_chain(paths: Sequence[Path], runtime: str, outputs: Sequence[str], **kwargs: Any) -> Runtime | None:
    """The parts at ``paths`` joined into one session by the named runtime (``Runtime.open_chain``);
    None where that engine cannot join graphs."""
    return _usable(runtime).open_chain([Path(p) for p in paths], list(outputs), **kwargs)
