"""The planner: (bundle, board profile, request) -> a Plan whose estimated peak memory fits the cap.

For each component it takes the board's first runtime:device whose format the bundle has, in the
board's precision order for that role. Then it walks a ladder of memory-saving choices, cheapest
in speed first, and keeps the first whose estimated peak fits the board's cap. The ladder is
(levels of loading) x (CFG batched, then sequential) x (whole-image decode, then tiles from the
board's largest to its smallest), where the loading levels are:

1. every component resident;
2. decoder and encoders loaded only for their stage and released (one load per image);
3. the denoiser too loaded per call (slow: only when nothing else fits);
4. the denoiser streamed: its stream parts (``convert --stream-parts``) opened, run and released
   in turn within each call, so only the largest part's weights are held (the slowest rung;
   ``edge_sdk.planning.stream_plan``). Memory comes first here: every component runs with its
   runtime's ``streamed_options`` (ONNX Runtime: no CPU arena) and is measured with them, and the
   streamed call itself is measured at the plan's size (``memory_probe.streamed_call_peak``).

Decode tiles under ``CLEAR_TILE`` latent cells for a decoder with attention come after all four
levels: they cost the image more than reloading costs time.

Artifact variants sit beside that ladder: where the bundle has them, the ``sliced`` denoiser and
decoder (attention in query chunks, ``convert --attention sliced:N``) and the ``tiny`` decoder
(TAESD) are swapped in when they reach an earlier rung than the plain artifacts, or the only one
that fits.

Peak memory is estimated per stage (see ``edge_sdk.planning.memory_estimate``): the process base, the
sessions open during that stage, the stage's activations at the requested size, and the image
buffers. When no rung fits, ``plan`` refuses before anything runs and says what would fit: a
smaller size, int8 artifacts, or a tile smaller than the board's limit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_sdk.bundle import Artifact, Bundle
from edge_sdk.errors import PlanError, UsageError
from edge_sdk.planning.board import BoardProfile, load_board
from edge_sdk.planning.memory_estimate import ComponentCost, default_cost
from edge_sdk.planning.memory_probe import component_cost
from edge_sdk.planning.plan import PRECISION_ORDER, ComponentPlan, Plan, TilePlan, usable_runtimes
from edge_sdk.planning.stream_plan import StreamCost, stream_cost
from edge_sdk.units import MB

TINY = "tiny"  # the decoder variant holding a tiny autoencoder (TAESD), see converters/diffusers_folder.py
SLICED = "sliced"  # attention in query chunks (convert --attention sliced:N, converters/attention.py)
MAIN_ROLES = ("denoiser", "generator")  # run at the request's size, every step
IMAGE_BYTES_PER_PIXEL = 32  # float32 decode output, its uint8 copy and the result's raw copy, per RGB pixel
BUFFER_OVERHEAD = 8 * MB  # latents, noise, sampler state, small copies
# What a run's process holds beyond the probe's base (Python, numpy, edge_sdk's pipelines, the
# runtime's set-up) and sessions: click, PNG encoding, result copies, thread pools, malloc arenas.
# Calibrated here against the peak RSS of planned runs of the heavy test bundle and SD 1.5 (issue
# 16): once a plan imported only the engines it could use, the process held 47 MB less than when
# it imported every one (40 MB had been calibrated then); 8 MB puts the heavy bundle's Zero, Pi 4
# and x86 plans at 1.06, 1.03 and 1.00 of their measured peaks.
PIPELINE_IMPORTS = 8 * MB
# The smallest decode tile (latent cells) that keeps a decoder with attention's image: SD 1.5's VAE
# at 64x64 cells, tiles with 25% overlap against the whole decode: 21.4 dB at 8 cells, 28.9 at 16,
# 36.1 at 24, 39.2 at 32 (benchmarks/RESULTS.md). Smaller tiles are the ladder's last resort.
CLEAR_TILE = 24
# Estimates land within ~5% of measured peaks here; keep that much of the cap spare.
FIT_MARGIN = 0.95


@dataclass
class PlanRequest:
    """What the user asks for. Sizes in pixels; None means the model's native size."""

    height: int | None = None
    width: int | None = None
    batch: int = 1
    guidance: float | None = None  # None: the bundle's default
    runtime: str | None = None  # force one runtime
    precision: str | None = None  # force one precision
    tile: int | None = None  # force a decode tile (latent cells)
    device: str | None = None  # only the board's runtime:device pairs on this device (e.g. "cpu", "GPU")
    threads: int | None = None  # threads per session instead of the board's
    installed_only: bool = False  # only runtimes/devices usable on this machine (for running here)
    measure: bool = True  # probe components here where their runtime is installed
    # Components to run on an Open Inference Protocol server: {component: url} (runtimes/remote.py).
    remote: dict[str, str] | None = None
    # "full" or "tiny" (the bundle's TAESD decoder variant); None: tiny only where it lets the run
    # take an earlier rung of the ladder (no tiles, no reloads) or where nothing else fits.
    decoder: str | None = None


@dataclass
class _Choice:
    plan: ComponentPlan
    artifact: Artifact
    cost: ComponentCost
    note: str = ""
    stream: StreamCost | None = None  # the denoiser's stream parts in this format/precision, if any
    chunks: int = 0  # N of a sliced:N artifact (attention in N query chunks), else 0
    # Its cost under the runtime's streamed_options, which every component of a streamed plan runs
    # with (measured on first use: only a plan that reaches the streamed rung needs it).
    streamed: Callable[[], ComponentCost] | None = None
    _streamed: ComponentCost | None = field(default=None, init=False, repr=False)

    def cost_in(self, rung: _Rung) -> ComponentCost:
        """The cost model on ``rung``: in a streamed one, with the runtime's streamed options."""
        if not rung.stream or self.streamed is None:
            return self.cost
        if self._streamed is None:
            self._streamed = self.streamed()
        return self._streamed


@dataclass
class _Rung:
    cfg: str
    release_others: bool  # decoder/encoders loaded per stage
    release_denoiser: bool
    tile: int | None
    estimates: dict[str, int] = field(default_factory=dict)
    stream: bool = False  # the denoiser's parts run in turn (level 4)
    poor: bool = False  # a tile under CLEAR_TILE for a decoder with attention: after every other rung

    @property
    def peak(self) -> int:
        return max(self.estimates.values())


def _latent_size(bundle: Bundle, req: PlanRequest) -> tuple[int, int, int]:
    """(height cells, width cells, pixels per cell) for the request, validated like the pipeline does."""
    model = bundle.model
    kind = model.get("kind", "pixel_diffusion")
    down = int(model.get("vae_downsample", 8)) if kind == "latent_diffusion" else 1
    mult = int(model.get("spatial_multiple", 1))
    native = bundle.native_cells() or (1, 1)  # (1, 1): a GAN's z has no spatial size
    cells = []
    for px, nat, axis in ((req.height, native[0], "height"), (req.width, native[1], "width")):
        if px is None:
            cells.append(int(nat))
            continue
        if px <= 0 or px % (down * mult):
            raise UsageError(f"{axis} {px} does not fit this model", hint=f"use a multiple of {down * mult} pixels")
        cells.append(px // down)
    return cells[0], cells[1], down


def _engine(runtime: str):
    """The adapter class of a board's runtime, or None when it cannot be loaded here (its formats: none)."""
    from edge_sdk.runtimes.registry import get_runtime

    try:
        cls = get_runtime(runtime)
    except Exception:  # noqa: BLE001 - a board may list runtimes this machine does not have
        return None
    return cls if cls.plannable else None


def _devices_here(runtime: str) -> set[str]:
    from edge_sdk.runtimes.registry import get_runtime

    try:
        info = get_runtime(runtime).probe()
    except Exception:  # noqa: BLE001 - not usable is the answer
        return set()
    return {str(d).lower() for d in info.get("devices", [])} | {"auto"}


def _choose(bundle: Bundle, board: BoardProfile, role: str, req: PlanRequest, hw: tuple[int, int],
            usable: set[str] | None, measure_ok: set[str], alt: str = "") -> _Choice:
    """The first artifact of ``role`` the board can run; ``alt`` picks among that variant only
    (an alternative network such as the "tiny" decoder) instead of the general/static ones."""
    arts = [a for a in bundle.artifacts(role) if (a.variant == alt if alt else a.variant != TINY)]
    prefs = [req.precision] if req.precision else list(board.precisions_for(role))
    # Board order first, then anything else the bundle has (a precision the board does not list
    # beats no plan; the note says so).
    order = prefs + ([] if req.precision else [p for p in PRECISION_ORDER if p not in prefs])
    tried = []
    threads = req.threads or board.threads
    for runtime, device in board.runtimes:
        if req.runtime and runtime != req.runtime:
            continue
        if req.device and device.lower() != req.device.lower():
            continue
        engine = _engine(runtime)
        if usable is not None:
            if runtime not in usable:
                tried.append(f"{runtime} (not installed here)")
                continue
            if device.lower() not in _devices_here(runtime):
                tried.append(f"{runtime}:{device} (no such device here)")
                continue
        for prec in order:
            for fmt in engine.formats if engine is not None else ():
                for a in arts:
                    if a.format != fmt or a.precision != prec:
                        continue
                    static = a.variant == "static"
                    if device.upper() == "NPU" and not static:
                        continue  # NPUs compile fixed shapes: only a static artifact runs there
                    if a.variant not in ("", "static", alt):
                        continue
                    if static:
                        shp = next(iter(a.static_shapes.values()), None) if a.static_shapes else None
                        if shp and len(shp) == 4 and (shp[2], shp[3]) != hw:
                            tried.append(f"{runtime}:{device} {prec} static {shp[2]}x{shp[3]} (other size)")
                            continue
                    elif device.upper() == "NPU":
                        continue
                    cp = ComponentPlan(runtime=runtime, format=fmt, precision=prec, variant=a.variant, device=device,
                                       threads=threads, options=dict(engine.plan_options))
                    measure = req.measure and runtime in measure_ok
                    # The main component runs at the request's size every step: measured there.
                    cost = (component_cost(bundle, role, runtime, a, device=engine.probe_device,
                                           threads=threads, target=hw if role in MAIN_ROLES else None)
                            if measure else default_cost(bundle, role, runtime, a))
                    streamed = (functools.partial(component_cost, bundle, role, runtime, a, device=engine.probe_device,
                                                  threads=threads, options=_streamed_session_options(engine),
                                                  target=hw if role in MAIN_ROLES else None)
                                if measure and engine.streamed_options else None)
                    note = ("" if prec in prefs
                            else f"{role}: {prec} (the board prefers {'/'.join(prefs)}, not in bundle)")
                    att = ((bundle.component(role).get("config") or {}).get("variants", {})
                           .get(a.variant, {}).get("attention", "")) if a.variant == SLICED else ""
                    n = str(att).partition("sliced:")[2]
                    return _Choice(cp, a, cost, note, chunks=int(n) if n.isdigit() else 0, streamed=streamed)
    have = ", ".join(sorted({f"{a.format}/{a.precision}{'/' + a.variant if a.variant else ''}" for a in arts}))
    want = ", ".join(f"{r}:{d}" for r, d in board.runtimes if (not req.runtime or r == req.runtime)
                     and (not req.device or d.lower() == req.device.lower()))
    if not want:
        offered = ", ".join(f"{r}:{d}" for r, d in board.runtimes)
        raise PlanError(f"board {board.name} offers no runtime{' ' + req.runtime if req.runtime else ''}"
                        f"{' on device ' + req.device if req.device else ''} (it lists {offered})",
                        hint="pick a runtime and device from that list, or leave --runtime/--device out")
    raise PlanError(f"no artifact of {role} ({have}) runs on board {board.name} ({want})"
                    + (f"; skipped: {'; '.join(tried)}" if tried else ""),
                    hint="convert with a format and precision the board lists (edge-sdk boards show "
                         f"{board.name}), or pass --runtime/--precision")


def _streamed_session_options(engine) -> dict[str, Any]:
    """The session options of a component in a streamed plan: the plan's, then the streamed ones."""
    return {**engine.plan_options, **engine.streamed_options}


def _stream_probe(bundle: Bundle, choice: _Choice, req: PlanRequest, hw: tuple[int, int],
                  here: set[str]) -> Callable[[list], int | None] | None:
    """How a streamed choice's parts get measured at the plan's size (as a streamed plan runs them:
    the runtime's streamed options), where the runtime is installed here and measuring is on."""
    runtime = choice.plan.runtime
    engine = _engine(runtime)
    if not req.measure or runtime not in here or engine is None:
        return None
    from edge_sdk.planning.memory_probe import streamed_call_peak

    return functools.partial(streamed_call_peak, bundle, "denoiser", runtime, target=hw, device=engine.probe_device,
                             threads=choice.plan.threads, options=_streamed_session_options(engine))


def _stage_estimates(bundle: Bundle, choices: dict[str, _Choice], rung: _Rung, cells_hw: tuple[int, int],
                     down: int, batch: int, cfg_active: bool) -> dict[str, int]:
    h, w = cells_hw
    # A streamed rung runs every component with the runtime's streamed options (no CPU arena):
    # their costs measured so. The streamed denoiser's own is its parts' (StreamCost).
    costs = {name: c.cost_in(rung) if name != "denoiser" else c.cost for name, c in choices.items()}
    # The whole denoiser's two-session probe inflates its base; a streamed run never opens it.
    bases = [c.base for n, c in costs.items() if not (rung.stream and n == "denoiser")]
    base = max(bases or [c.base for c in costs.values()]) + PIPELINE_IMPORTS
    sess = {name: c.session for name, c in costs.items()}
    resident = {name for name in choices
                if not (rung.release_denoiser if name == "denoiser" else rung.release_others)}
    est: dict[str, int] = {}
    # A resident session keeps the activation memory of its largest call (ORT's CPU arena and
    # most allocators do not give it back), so later stages carry it too. A stage that opens a
    # component peaks at the larger of its activations and what the open holds for a moment
    # (``open_extra``; the session is counted in ``held`` either way).
    # Sessions open when first used: a stage holds the resident ones that ran before it, not yet
    # the ones that come later (the text-encoder stage of a resident SD 1.5 plan had counted the
    # UNet's 3.3 GB: 4355 MB estimated, 736 MB measured).
    retained: dict[str, int] = {}

    def held(during: str) -> int:
        return sum(sess[n] + retained.get(n, 0) for n in choices if (n in resident and n in retained) or n == during)

    def ran(name: str, act: int) -> None:
        if name in resident:
            # A runtime that frees a session's scratch as the pipeline moves on keeps its fixed part
            # (OpenVINO: the weights laid out on the first call): a test denoiser's 49 MB went to 18.
            kept = min(act, int(costs[name].c0)) if costs[name].scratch_released else act
            retained[name] = max(retained.get(name, 0), kept)

    for role in ("text_encoder", "encoder"):
        if role in choices:
            act = costs[role].activation(h * w, batch=batch)
            est[role.replace("_", "-")] = base + held(role) + max(act, costs[role].open_extra) + BUFFER_OVERHEAD
            ran(role, act)
    main = "denoiser" if "denoiser" in choices else ("generator" if "generator" in choices else None)
    if main is not None:
        c = costs[main]
        per_call = _rows_per_call(batch, cfg_active, rung)
        if main == "generator":  # one-shot: a whole image per call, one row at a time
            px = h * w * down * down
            act = c.activation(h * w)
            est["generate"] = base + held(main) + max(act + batch * px * IMAGE_BYTES_PER_PIXEL, c.open_extra)
        else:  # called once per step (twice with sequential CFG): the repeat factor applies
            # A resident session runs every step at one shape: its steady state. One reloaded per
            # call starts with a fresh arena each time.
            act = c.activation(h * w, batch=per_call, repeated=main in resident)
            if rung.stream:  # one part's session at a time, plus the tensors held between parts
                sc = choices[main].stream
                chain = sc.call_peak(h, w, per_call)
                if chain is not None:  # the parts' own peak: measured, or the int8 factor
                    act = chain
                    est["denoise"] = base + held(main) - sess[main] + act + BUFFER_OVERHEAD
                else:
                    act = c.activation(h * w, batch=per_call) + sc.held_bytes(h, w, per_call)
                    est["denoise"] = base + held(main) - sess[main] + sc.session + act + BUFFER_OVERHEAD
            else:
                est["denoise"] = base + held(main) + max(act, c.open_extra) + BUFFER_OVERHEAD
            if "decoder" not in choices:  # pixel space: the samples are the image
                est["denoise"] += batch * h * w * IMAGE_BYTES_PER_PIXEL
        ran(main, act)
    if "decoder" in choices:
        c = costs["decoder"]
        px = h * w * down * down
        # Several decoder calls of one shape on one session (tiles, batch rows): its steady state.
        repeated = "decoder" in resident and (batch > 1 or (rung.tile is not None and max(h, w) > rung.tile))
        if rung.tile is None:
            act = c.activation(h * w, down=down, repeated=repeated)
            extra = 0
        else:
            t = rung.tile
            act = c.activation(min(t, h) * min(t, w), down=down, repeated=repeated)
            extra = px * 4  # the blend weights
        est["decode"] = (base + held("decoder") + max(act + batch * px * IMAGE_BYTES_PER_PIXEL + extra, c.open_extra)
                         + BUFFER_OVERHEAD)
    return est


def _tiles(board: BoardProfile, h: int, w: int, forced: int | None) -> list[int]:
    if forced is not None:
        return [forced]
    out, t = [], board.max_tile
    while t >= board.min_tile:
        if t < max(h, w):
            out.append(t)
        t = min(t - 2, int(t * 0.75)) // 2 * 2 if t > 4 else t - 1
    return out


def _overlap(board: BoardProfile, tile: int) -> int:
    return max(1, int(round(tile * board.overlap_fraction))) if tile > 2 else 0


def _ladder(choices: dict[str, _Choice], board: BoardProfile, h: int, w: int, cfg_opts: list[str],
            tile_forced: int | None, min_tile: int | None = None) -> list[_Rung]:
    has_decoder = "decoder" in choices
    tiles = _tiles(board, h, w, tile_forced) if has_decoder else []
    if min_tile is not None:
        tiles = [t for t in range(min(board.min_tile - 1, max(h, w) - 1), min_tile - 1, -2)]
    chunks = choices["decoder"].chunks if has_decoder else 0
    if chunks and tile_forced is None:
        # A sliced:N graph splits the tokens into N equal query chunks fixed at export: a tile
        # whose token count is not a multiple of N fails in ONNX Runtime (a Reshape, measured on
        # SD 1.5's VAE at 36-cell tiles with sliced:32).
        tiles = [t for t in tiles if (t * t) % chunks == 0]
    others = any(n != "denoiser" for n in choices)
    whole = [None] if tile_forced is None and min_tile is None else []
    # Tiles too small for a decoder with attention come after every other rung, slowest included:
    # a smaller image beats a wrong one.
    poor = [t for t in tiles if t < CLEAR_TILE] if whole and _decoder_attends(choices) else []
    levels = [(o, d, False) for o, d in ((False, False), (True, False), (True, True))
              if (others or d or not o) and (not d or "denoiser" in choices)]
    if "denoiser" in choices and choices["denoiser"].stream is not None:
        levels.append((True, True, True))
    return [_Rung(cfg, release_others, release_denoiser, tile, stream=stream, poor=is_poor)
            for group, is_poor in ((whole + [t for t in tiles if t not in poor], False), (poor, True))
            for release_others, release_denoiser, stream in levels
            for cfg in cfg_opts for tile in group]


def _rows_per_call(batch: int, cfg_active: bool, rung: _Rung) -> int:
    """The denoiser's batch per call: twice the images with batched CFG."""
    return batch * (2 if cfg_active and rung.cfg == "batched" else 1)


def _decoder_attends(choices: dict[str, _Choice]) -> bool:
    """Whether the chosen decoder holds attention (its tiles then lose global context)."""
    return "decoder" in choices and _attends(str(choices["decoder"].artifact.path))


@functools.lru_cache(maxsize=64)
def _attends(path: str) -> bool:
    from edge_sdk.planning.memory_estimate import has_attention

    return has_attention(Path(path)) is not False


def _first_fit(bundle, choices, board, hw, down, batch, cfg_active, cfg_opts, cap, tile_forced=None,
               min_tile=None) -> tuple[_Rung | None, _Rung | None]:
    """The first rung that fits the cap, and the rung with the lowest peak (for the refusal)."""
    best = None
    for rung in _ladder(choices, board, hw[0], hw[1], cfg_opts, tile_forced, min_tile):
        rung.estimates = _stage_estimates(bundle, choices, rung, hw, down, batch, cfg_active)
        if rung.peak <= cap * FIT_MARGIN:
            return rung, rung
        if best is None or rung.peak < best.peak:
            best = rung
    return None, best


def plan(bundle: Bundle, board: BoardProfile | str, request: PlanRequest | None = None) -> Plan:
    """A plan for ``bundle`` on ``board`` whose estimated peak memory fits the board's cap, or PlanError."""
    req = request or PlanRequest()
    if isinstance(board, str):
        from edge_sdk.planning.board_detect import resolve_board

        board = load_board(resolve_board(board))  # "auto": the board detected here
    if req.batch < 1:
        raise UsageError(f"batch must be at least 1, got {req.batch}")
    if req.precision and req.precision not in PRECISION_ORDER:
        raise UsageError(f"unknown precision {req.precision!r}", hint=f"precisions: {', '.join(PRECISION_ORDER)}")
    h, w, down = _latent_size(bundle, req)
    # Only the board's runtimes that open a format the bundle has are probed (and so imported).
    formats = {a.format for role in bundle.components for a in bundle.artifacts(role)}
    engines = {r: _engine(r) for r, _ in board.runtimes if not req.runtime or r == req.runtime}
    here = usable_runtimes(r for r, e in engines.items() if e is not None and formats & set(e.formats))
    usable = here if req.installed_only else None
    if req.decoder not in (None, "full", TINY):
        raise UsageError(f"unknown decoder choice {req.decoder!r}", hint="use full or tiny")
    tiny_here = "decoder" in bundle.components and any(a.variant == TINY for a in bundle.artifacts("decoder"))
    if req.decoder == TINY and not tiny_here:
        raise UsageError(f"bundle {bundle.name} has no tiny decoder",
                         hint="convert with --tiny-vae TAESD_FOLDER to add one, or drop --decoder tiny")
    choices = {role: _choose(bundle, board, role, req, (h, w), usable, here,
                             alt=TINY if role == "decoder" and req.decoder == TINY else "")
               for role in bundle.components}
    if "denoiser" in choices and "denoiser" not in (req.remote or {}):
        c = choices["denoiser"]
        c.stream = stream_cost(bundle, "denoiser", c.plan, c.artifact, c.cost,
                               _stream_probe(bundle, c, req, (h, w), here), (h, w))
    remote_notes = _place_remote(choices, req.remote or {}) if req.remote else []
    model = bundle.model
    guidance = req.guidance if req.guidance is not None else float(bundle.sampler.get("default_guidance", 1.0))
    cfg_active = model.get("conditioning") in ("class", "text") and guidance != 1.0 and "denoiser" in choices
    static_batch1 = "denoiser" in choices and choices["denoiser"].plan.variant == "static"
    cfg_opts = ["sequential"] if static_batch1 else (["batched", "sequential"] if cfg_active else ["batched"])
    cap = board.cap_bytes
    fit, best = _first_fit(bundle, choices, board, (h, w), down, req.batch, cfg_active, cfg_opts, cap, req.tile)
    plain = dict(choices)  # before any variant is swapped in: the fastest plan's artifacts
    tiny_note = ""
    # Tried wherever the full VAE's plan is not the fastest: with the tiles too small for it last on
    # the ladder, that plan can be sequential CFG where, tiles first, it had been a small tile.
    if tiny_here and req.decoder is None and "decoder" not in (req.remote or {}) and (
            fit is None or _rank(fit) > _TOP):
        fit, best, tiny_note = _try_tiny(bundle, board, req, choices, fit, best, (h, w), down, usable, here,
                                         cfg_active, cfg_opts, cap)
    sliced_note = ""
    if fit is None or _rank(fit) > _TOP:
        fit, best, sliced_note = _try_sliced(bundle, board, req, choices, fit, best, (h, w), down, usable, here,
                                             cfg_active, cfg_opts, cap)
    if fit is None:
        raise _refusal(bundle, board, req, choices, best, (h, w), down, cfg_active, cfg_opts)
    notes = [c.note for c in choices.values() if c.note] + remote_notes + ([tiny_note] if tiny_note else []) + (
        [sliced_note] if sliced_note else [])
    for name, c in choices.items():
        if name in (req.remote or {}):  # on a server: no local memory model to report
            continue
        cost = c.cost_in(fit) if name != "denoiser" else c.cost
        notes.append(f"{name}: memory model {cost.source} ({cost.runtime}; session {cost.session / MB:.0f} MB"
                     + (f", {cost.c1:.0f} B/{cost.unit.replace('_', ' ')}" if cost.c1 else "")
                     + (f", attention {cost.c2:.2f} B/cell^2" if cost.c2 else "") + ")")
    rows = _rows_per_call(req.batch, cfg_active, fit)  # a streamed denoiser's parts hold what they did at it
    if fit.stream:
        notes.append(choices["denoiser"].stream.note(fit.peak, cap * FIT_MARGIN, rows))
    elif fit.release_denoiser:
        notes.append("the denoiser is loaded for every call (slow): nothing else fits the cap")
    if fit.tile is not None:
        notes.append(f"decode in {fit.tile}x{fit.tile}-cell tiles ({fit.tile * down} px) with "
                     f"{_overlap(board, fit.tile)}-cell overlap"
                     + (f"; under {CLEAR_TILE} cells a decoder with attention loses detail at the seams"
                        + (" (the tile asked for)" if req.tile else " (nothing with larger tiles fits)")
                        if fit.tile < CLEAR_TILE and _decoder_attends(choices) else ""))
    from edge_sdk.runtimes.registry import streamed_options

    comps = {}
    kept = 0
    for name, c in choices.items():
        c.plan.resident = not (fit.release_denoiser if name == "denoiser" else fit.release_others)
        if fit.stream and name == "denoiser":  # the parts come and go inside the streamed session
            c.plan.resident, c.plan.stream = True, True
            c.plan.stream_budget = c.stream.budget(fit.peak, cap * FIT_MARGIN, rows)
            kept = c.stream.kept_bytes(c.plan.stream_budget, rows)
        if fit.stream:  # memory first throughout: every component as its streamed cost was measured
            c.plan.options.update(streamed_options(c.plan.runtime))
        comps[name] = c.plan
    estimates = dict(fit.estimates)
    for stage in ("denoise", "decode"):  # the parts kept open stay from the first denoiser call on
        if stage in estimates:
            estimates[stage] += kept
    estimates["peak"] = max(estimates.values())
    rung, slow = _rung_summary(bundle, plain, choices, fit, (h, w), down, req.batch, cfg_active, cfg_opts, cap)
    return Plan(components=comps, cfg=fit.cfg, rung=rung, slowdown=slow,
                decode_tiling=TilePlan(fit.tile, _overlap(board, fit.tile)) if fit.tile is not None else None,
                memory_cap_bytes=cap, board=board.name, estimates=estimates, notes=notes,
                memory_unified=board.unified, size=(h * down, w * down))


_LEVELS = {1: "resident", 2: "per-stage loading", 3: "per-call loading", 4: "streamed"}


def _rung_summary(bundle: Bundle, plain: dict[str, _Choice], choices: dict[str, _Choice], fit: _Rung,
                  hw: tuple[int, int], down: int, batch: int, cfg_active: bool, cfg_opts: list[str],
                  cap: int) -> tuple[str, dict[str, Any]]:
    """The rung taken, as one line, and its expected slowdown against the fastest plan (everything
    resident, batched CFG, the plain artifacts, whole-image decode), which may not fit the cap."""
    from edge_sdk.planning.slowdown import expected

    level = 4 if fit.stream else 3 if fit.release_denoiser else 2 if fit.release_others else 1
    added = []
    if level == 4:
        split = bundle.component("denoiser").get("stream", {}).get("split", "")
        added.append("streamed per layer" if split == "unet-layers" else "streamed")  # measured with sequential CFG
    elif level > 1:
        added.append(_LEVELS[level])
    if fit.cfg == "sequential" and cfg_active and level != 4:
        added.append("sequential CFG")
    if any(c.plan.variant == SLICED for c in choices.values()):
        added.append("sliced attention")
    if "decoder" in choices and choices["decoder"].plan.variant == TINY:
        added.append("tiny decoder")
    if fit.tile is not None:
        added.append("tiled decode")
    factor, known, unknown = expected(added)
    top = _Rung(cfg_opts[0], False, False, None)
    top_peak = max(_stage_estimates(bundle, plain, top, hw, down, batch, cfg_active).values())
    rung = f"{level} ({_LEVELS[level]})" + ("" if not added or added == [_LEVELS[level]] else
                                            ": " + ", ".join(a for a in added if a != _LEVELS[level]))
    return rung, {"factor": round(factor, 2), "estimated": True, "factors": known, "not_measured": unknown,
                  "fastest_peak_mb": round(top_peak / MB, 1), "fastest_fits": top_peak <= cap * FIT_MARGIN,
                  "against": "the fastest plan: everything resident, batched CFG, full attention, whole-image "
                             "decode"}


def _rank(rung: _Rung) -> tuple:
    """Where a rung sits on the ladder (lower is faster, or keeps the image): tiles too small for
    the decoder last, then loading level, CFG, then tiles."""
    return (rung.poor, rung.stream, rung.release_denoiser, rung.release_others, rung.cfg == "sequential",
            rung.tile is not None, -(rung.tile or 0))


# The rank of the fastest rung: all resident, batched CFG, no tiles.
_TOP = (False, False, False, False, False, False, 0)


def _try_sliced(bundle: Bundle, board: BoardProfile, req: PlanRequest, choices: dict[str, _Choice],
                fit: _Rung | None, best: _Rung | None, hw: tuple[int, int], down: int, usable: set[str] | None,
                here: set[str], cfg_active: bool, cfg_opts: list[str], cap: int) -> tuple:
    """Swap in the ``sliced`` (query-chunked attention) artifacts of the denoiser and decoder when
    they reach an earlier rung than full attention, or the only one that fits. Same weights and
    arithmetic (images within float rounding); slower by the chunk loop, far less than tiles,
    per-stage reloads or per-call reloads of the UNet cost."""
    swapped: dict[str, _Choice] = {}
    for role in ("denoiser", "decoder"):
        if role not in choices or choices[role].plan.variant == TINY or role in (req.remote or {}):
            continue  # TAESD has no attention; a remote component holds nothing here
        if not any(a.variant == SLICED for a in bundle.artifacts(role)):
            continue
        try:
            swapped[role] = _choose(bundle, board, role, req, hw, usable, here, alt=SLICED)
        except PlanError:
            continue
        if role == "denoiser":  # stream parts converted with sliced attention go with this choice
            c = swapped[role]
            c.stream = stream_cost(bundle, role, c.plan, c.artifact, c.cost, _stream_probe(bundle, c, req, hw, here),
                                   hw)
    if not swapped:
        return fit, best, ""
    trial = {**choices, **swapped}
    tfit, tbest = _first_fit(bundle, trial, board, hw, down, req.batch, cfg_active, cfg_opts, cap, req.tile)
    if tfit is None:
        return fit, (tbest if best is None or (tbest is not None and tbest.peak < best.peak) else best), ""
    if fit is not None and _rank(tfit) >= _rank(fit):
        return fit, best, ""
    chunks = {r: (bundle.component(r).get("config") or {}).get("variants", {}).get(SLICED, {}).get("attention", SLICED)
              for r in swapped}
    why = "nothing with full attention fits the cap" if fit is None else "full attention would need a slower rung"
    # The fastest plan, for comparison: full attention, everything resident, batched CFG, no tiles.
    top = _Rung(cfg_opts[0], False, False, None)
    top_peak = max(_stage_estimates(bundle, choices, top, hw, down, req.batch, cfg_active).values())
    choices.update(swapped)
    return tfit, tbest, ("attention in query chunks (" + ", ".join(f"{r}: {c}" for r, c in chunks.items())
                         + f"), since {why} on {board.name}; the fastest plan (full attention) is estimated at "
                         f"{top_peak / MB:.0f} MB; ~1.2x its time (sliced:16, SD-shaped model at 512x512, "
                         "benchmarks/RESULTS.md)")


def _try_tiny(bundle: Bundle, board: BoardProfile, req: PlanRequest, choices: dict[str, _Choice],
              fit: _Rung | None, best: _Rung | None, hw: tuple[int, int], down: int, usable: set[str] | None,
              here: set[str], cfg_active: bool, cfg_opts: list[str], cap: int) -> tuple:
    """Swap in the tiny decoder when it reaches an earlier (faster) rung than the full VAE, or the
    only one that fits: TAESD trades some image detail for ~1/50 of the decoder's memory, which
    beats tiled decodes (slower, seams) and per-stage reloads on small boards."""
    try:
        tiny = _choose(bundle, board, "decoder", req, hw, usable, here, alt=TINY)
    except PlanError:
        return fit, best, ""  # no tiny artifact this board runs: the full VAE's plan stands
    trial = {**choices, "decoder": tiny}
    tfit, tbest = _first_fit(bundle, trial, board, hw, down, req.batch, cfg_active, cfg_opts, cap, req.tile)
    if tfit is None or (fit is not None and _rank(tfit) >= _rank(fit)):
        return fit, best, ""
    why = ("the full VAE does not fit the cap" if fit is None else
           "the full VAE would need " + ("per-call reloads" if fit.release_denoiser else
                                         "per-stage loading" if fit.release_others else
                                         "tiled decoding" if fit.tile is not None else "sequential CFG"))
    choices["decoder"] = tiny
    return tfit, tbest, f"decoder: tiny (TAESD) variant, since {why} on {board.name} (--decoder full to force it)"


def _place_remote(choices: dict[str, _Choice], remote: dict[str, str]) -> list[str]:
    """Put components on a server: zero local memory, the chosen local artifact as the fallback."""
    from edge_sdk.runtimes.remote import RemoteRuntime, round_trip_ms, split_url

    remote_name = RemoteRuntime.name

    notes = []
    for name, url in remote.items():
        if name not in choices:
            raise UsageError(f"remote component {name!r} is not in this bundle",
                             hint=f"components: {', '.join(choices)}")
        split_url(url)
        c = choices[name]
        local = c.plan
        try:
            rtt = round_trip_ms(url, name)
            latency = f"round trip {rtt:.1f} ms per call measured now, plus the server's compute"
        except Exception as e:  # noqa: BLE001 - planning works offline; the run falls back
            rtt = None
            latency = f"server not reachable now ({type(e).__name__}); runs fall back to {local.runtime} locally"
        opts = {"url": url, "model": name, "fallback": local.runtime, "fallback_device": local.device}
        if rtt is not None:
            opts["latency_ms"] = round(rtt, 2)
        c.plan = ComponentPlan(runtime=remote_name, format=local.format, precision=local.precision,
                               variant=local.variant, device=remote_name, threads=local.threads, options=opts)
        # The server holds the weights and activations: nothing local beyond the tensors sent.
        c.cost = ComponentCost(role=name, runtime=remote_name, base=0, session=0, c0=0.0, c1=0.0, c2=0.0,
                               unit=c.cost.unit, source=remote_name)
        c.streamed = None
        notes.append(f"{name}: remote at {url} (0 MB local; {latency}); fallback {local.runtime} "
                     f"{local.format}/{local.precision} needs {c.artifact.size / MB:.0f} MB+ not counted in the peak")
    return notes


def _refusal(bundle: Bundle, board: BoardProfile, req: PlanRequest, choices: dict[str, _Choice],
             best: _Rung | None, hw: tuple[int, int], down: int, cfg_active: bool, cfg_opts: list[str]) -> PlanError:
    cap = board.cap_bytes
    h, w = hw
    ideas = []
    # A smaller size at the same aspect ratio, on the most memory-saving rungs.
    mult = int(bundle.model.get("spatial_multiple", 1))
    lo, hi = 0.0, 1.0
    for _ in range(12):
        mid = (lo + hi) / 2
        hh, ww = max(mult, int(h * mid) // mult * mult), max(mult, int(w * mid) // mult * mult)
        fit, _ = _first_fit(bundle, choices, board, (hh, ww), down, req.batch, cfg_active, cfg_opts, cap, req.tile)
        lo, hi = (mid, hi) if fit else (lo, mid)
    hh, ww = int(h * lo) // mult * mult, int(w * lo) // mult * mult
    if hh >= mult and ww >= mult and _first_fit(bundle, choices, board, (hh, ww), down, req.batch, cfg_active,
                                                cfg_opts, cap, req.tile)[0]:
        ideas.append(f"--size {ww * down}x{hh * down}")
    # int8 artifacts: the bundle's own if it has them, else what converting to int8 would weigh.
    if not (req.precision or "").startswith("int8"):
        int8 = {}
        for name, c in choices.items():
            a8 = next((a for a in bundle.artifacts(name) if a.precision.startswith("int8") and a.format == c.plan.format
                       and a.variant == c.plan.variant), None)
            cost = ComponentCost(**{**c.cost.to_json()})
            if a8 is not None:
                cost.session = int(c.cost.session * a8.size / max(c.artifact.size, 1))
            else:  # int8 weights: a quarter of fp32, half of fp16
                ratio = {"fp32": 0.25, "fp16": 0.5}.get(c.plan.precision, 1.0)
                cost.session = int(c.cost.session - c.artifact.size * (1 - ratio))
            int8[name] = _Choice(c.plan, c.artifact, cost)
        fit, _ = _first_fit(bundle, int8, board, hw, down, req.batch, cfg_active, cfg_opts, cap, req.tile)
        if fit is not None:
            have = all(any(a.precision.startswith("int8") for a in bundle.artifacts(n)) for n in choices)
            ideas.append("--precision int8-static" if have else "int8 artifacts (edge-sdk convert --precision int8)")
    # A tile below the board's smallest.
    if "decoder" in choices and req.tile is None:
        fit, _ = _first_fit(bundle, choices, board, hw, down, req.batch, cfg_active, cfg_opts, cap, min_tile=2)
        if fit is not None and fit.tile is not None:
            ideas.append(f"--tile {fit.tile} (below this board's smallest tile, {board.min_tile}; slower, more seams)")
    stage = max(best.estimates, key=best.estimates.get) if best else "?"
    need = best.peak if best else 0
    return PlanError(
        f"bundle {bundle.name} at {w * down}x{h * down} needs at least {need / MB:.0f} MB (stage {stage}) on "
        f"{board.name}, over its {cap / MB:.0f} MB cap, even with sequential CFG, tiles and one component loaded "
        "at a time",
        hint=("what would fit: " + "; or ".join(ideas)) if ideas else "no smaller setting fits; use a bigger board")


def describe(plan_: Plan) -> list[tuple[str, ...]]:
    """Rows for a human-readable table of a plan's components."""
    return [(name, c.runtime, c.device, c.format, c.precision + (f"/{c.variant}" if c.variant else ""),
             str(c.threads or "-"), "streamed" if c.stream else "yes" if c.resident else "per stage")
            for name, c in plan_.components.items()]


def plan_summary(plan_: Plan) -> dict[str, Any]:
    """The plan as JSON-able data with MB figures, for `edge-sdk plan --json`."""
    d = plan_.to_json()
    d["estimates_mb"] = {k: round(v / MB, 1) for k, v in plan_.estimates.items()}
    d["memory_cap_mb"] = round(plan_.memory_cap_bytes / MB, 1) if plan_.memory_cap_bytes else None
    return d

