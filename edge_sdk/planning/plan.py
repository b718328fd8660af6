"""A plan: which runtime, format, precision and device each component uses, and how a run is shaped.

The planner (``edge_sdk.planning.planner``) fills one from a board profile; ``default_plan`` is the plan
without a board: the first installed runtime that opens an artifact the bundle has, fp32 first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from edge_sdk.bundle import Bundle
from edge_sdk.errors import RuntimeUnavailableError, UsageError

# Every precision an artifact may have, in the order a plan without a board prefers them: the one
# list (converters, the CLI, boards, bench and the planner read it; the manifest schema's enum is
# checked equal to it by tests/core/test_one_source.py).
PRECISION_ORDER = ("fp32", "fp16", "int8-static", "int8-weight")


@dataclass
class ComponentPlan:
    runtime: str
    format: str
    precision: str
    variant: str = ""
    device: str = "auto"
    threads: int | None = None
    resident: bool = True  # False: loaded, run and released in turn to save memory
    options: dict[str, Any] = field(default_factory=dict)
    # Run the component's stream parts in turn (edge_sdk.pipelines.streamed), keeping open only
    # the first parts whose artifacts fit stream_budget bytes together.
    stream: bool = False
    stream_budget: int = 0
    # DeepCache (edge_sdk.pipelines.deep_cache): one full UNet run every deep_cache steps, the
    # shallow stream parts of deep_cache_branch in between; 0: off.
    deep_cache: int = 0
    deep_cache_branch: str = "down0"


@dataclass
class TilePlan:
    tile: int  # latent cells per tile side
    overlap: int  # latent cells shared by neighbouring tiles


@dataclass
class Plan:
    components: dict[str, ComponentPlan]
    cfg: str = "batched"  # or "sequential": one denoiser call per branch, half the activations
    decode_tiling: TilePlan | None = None
    memory_cap_bytes: int | None = None
    board: str | None = None
    estimates: dict[str, int] = field(default_factory=dict)  # stage -> bytes
    notes: list[str] = field(default_factory=list)
    # True on boards whose GPU shares RAM with the CPU (Jetson): the cap counts both.
    memory_unified: bool = False
    size: tuple[int, int] | None = None  # (height, width) in pixels the estimates were made for
    # The ladder rung taken ("1 resident", "4 streamed", with the choices added on top) and the
    # expected slowdown against the fastest plan (edge_sdk.planning.slowdown: recorded factors).
    rung: str = ""
    slowdown: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Plan:
        d = dict(d)
        d["components"] = {k: ComponentPlan(**v) for k, v in d["components"].items()}
        if d.get("decode_tiling"):
            d["decode_tiling"] = TilePlan(**d["decode_tiling"])
        if d.get("size"):
            d["size"] = tuple(d["size"])
        return cls(**d)


def usable_runtimes(names: Iterable[str] | None = None) -> set[str]:
    """Runtimes that run here, among ``names`` (default: all). Each one probed is imported: a plan
    asks only for those it could use, so a run does not carry engines it never opens (OpenVINO
    and LiteRT added 68 MB to a Pi Zero's ONNX Runtime run, benchmarks/RESULTS.md, issue 16)."""
    from edge_sdk.runtimes.registry import available_runtimes, is_host_only

    return {name for name, info in available_runtimes(names).items()
            if info.get("available") and not is_host_only(name)}


def default_plan(bundle: Bundle, *, runtime: str | None = None, precision: str | None = None,
                 format: str | None = None, device: str = "auto", threads: int | None = None,
                 fallback_precision: str | None = None) -> Plan:
    """Pick an artifact and runtime per component from what is installed here.

    ``fallback_precision``: a component without a ``precision`` artifact runs this precision
    instead (the plan's notes say which), as ``edge-sdk bench`` does for one backend's row."""
    from edge_sdk.runtimes.registry import install_hint, plan_options, runtime_names, runtimes_for_format

    usable = usable_runtimes()
    if runtime is not None and runtime not in usable:
        if runtime not in runtime_names():
            raise UsageError(f"unknown runtime {runtime!r}", hint=f"known: {', '.join(runtime_names())}")
        raise RuntimeUnavailableError(f"runtime {runtime!r} is not usable here", hint=install_hint(runtime, ""))
    comps = {}
    notes = []
    for name in bundle.components:
        arts = [a for a in bundle.artifacts(name) if a.variant == ""]
        best = None
        for want in [precision] + ([fallback_precision] if fallback_precision and precision else []):
            for a in sorted(arts, key=lambda a: PRECISION_ORDER.index(a.precision) if a.precision in PRECISION_ORDER
                            else 99):
                if format and a.format != format or want and a.precision != want:
                    continue
                rts = [r for r in runtimes_for_format(a.format) if r in usable and (runtime is None or r == runtime)]
                if rts:
                    best = ComponentPlan(runtime=rts[0], format=a.format, precision=a.precision, device=device,
                                         threads=threads, options=plan_options(rts[0]))
                    break
            if best is not None:
                if want != precision:
                    notes.append(f"{name}: no {format + '/' if format else ''}{precision} artifact, "
                                 f"runs {best.format}/{best.precision}")
                break
        if best is None:
            have = ", ".join(sorted({f"{a.format}/{a.precision}" for a in arts}))
            want = "/".join(x for x in (format, precision, runtime) if x) or "any"
            raise RuntimeUnavailableError(
                f"no artifact of component {name} ({have}) can run here with {want}",
                hint=f"usable runtimes here: {', '.join(sorted(usable)) or 'none'}; install one, e.g. "
                     "pip install 'edge-sdk[onnxruntime]'")
        comps[name] = best
    return Plan(components=comps, notes=notes)
