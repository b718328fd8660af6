"""DeepCache: reuse the UNet's deep features across sampler steps (opt-in, issue 17).

On a *full* step the denoiser's stream parts (``converters/stream_split.py``: ``embed``,
``down<i>``, ``mid``, ``up<j>``, ``out``, each an exported, validated sub-graph recorded in the
manifest) all run, and the tensors that the *shallow path* takes but does not make itself are
kept. On the ``interval - 1`` steps in between, only the shallow path runs, on those kept tensors:

- branch ``down0`` (default, DeepCache's own choice): ``embed`` (time embedding + conv_in) ->
  ``down0`` -> last up block -> ``out``; the kept tensor is the last up block's input from the
  up path below it (the deep feature);
- branch ``conv_in``: ``embed`` -> last up block -> ``out``; the deep feature and the first down
  block's skips are kept (cheaper, less exact).

The cache is per step and per denoiser call within a step (CFG run as two calls keeps two), so it
is blind to the sampler. It changes results: ``edge-sdk tune`` keeps it only above its PSNR bar.
The shallow path is made of the same part artifacts as the full step, so no artifact is added:
the parts were validated against PyTorch one by one and as a chain when converted.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from edge_sdk.bundle import Bundle, StreamPart
from edge_sdk.errors import BundleError, InputError, UsageError
from edge_sdk.manifest import TensorSpec
from edge_sdk.planning.plan import ComponentPlan, Plan
from edge_sdk.runtimes.base import Runtime
from edge_sdk.runtimes.registry import chained_options, open_artifact, open_chain

BRANCHES = ("down0", "conv_in")
DEFAULT_BRANCH = "down0"
DENOISER = "denoiser"
CONVERT_HINT = "convert the model with `edge-sdk convert ... --stream-parts denoiser` (the parts are its sub-graphs)"


def check_interval(interval: Any) -> int:
    """``interval`` as an int >= 1 (1: every step full, no caching), else UsageError."""
    if isinstance(interval, bool) or not isinstance(interval, (int, np.integer)) or interval < 1:
        raise UsageError(f"--deep-cache takes the number of steps per full UNet run, an integer >= 1, got "
                         f"{interval!r}", hint="e.g. 3: one full step, then two shallow ones")
    return int(interval)


def check_branch(branch: str | None) -> str:
    branch = branch or DEFAULT_BRANCH
    if branch not in BRANCHES:
        raise UsageError(f"unknown DeepCache branch {branch!r}", hint=f"one of: {', '.join(BRANCHES)}")
    return branch


def shallow_path(parts: list[StreamPart] | list[str], branch: str) -> list[int]:
    """Indices of the parts a cached step runs, in run order."""
    names = [p if isinstance(p, str) else p.name for p in parts]
    ups = [n for n in names if n.startswith("up")]
    want = ["embed"] + (["down0"] if branch == "down0" else []) + ups[-1:] + ["out"]
    missing = [n for n in want if n not in names]
    if missing or not ups:
        raise BundleError(f"the denoiser's stream parts ({', '.join(names)}) lack {', '.join(missing) or 'an up block'}"
                          f" for DeepCache's {branch} branch", hint=CONVERT_HINT)
    return [names.index(n) for n in want]


def cached_names(parts: list[StreamPart], shallow: list[int], component_inputs: set[str]) -> list[str]:
    """The tensors the shallow path reads that it does not make: kept from the last full step."""
    made = set(component_inputs)
    out: list[str] = []
    for i in shallow:
        for t in parts[i].inputs:
            if t.name not in made and t.name not in out:
                out.append(t.name)
        made |= {t.name for t in parts[i].outputs}
    return out


def deep_path(parts: list[StreamPart], kept: list[str]) -> list[int]:
    """Indices of the parts a full step needs to make the ``kept`` tensors, in run order."""
    need, out = set(kept), []
    for i in range(len(parts) - 1, -1, -1):
        if need & {t.name for t in parts[i].outputs}:
            out.append(i)
            need |= {t.name for t in parts[i].inputs}
    return out[::-1]


def with_deep_cache(bundle: Bundle, plan: Plan, interval: int | None, branch: str | None = None) -> Plan:
    """``plan`` with the denoiser's DeepCache set (``interval`` None: unchanged; 1: off), after
    checking the bundle has the stream parts it needs in the plan's format and precision."""
    if interval is None:
        if branch is not None:
            raise UsageError("a DeepCache branch needs --deep-cache N too")
        return plan
    interval = check_interval(interval)
    branch = check_branch(branch)
    cp = plan.components.get(DENOISER)
    if cp is None:
        raise UsageError(f"bundle {bundle.name} has no denoiser: DeepCache applies to diffusion UNets")
    if interval > 1:
        parts = bundle.stream_parts(DENOISER, cp.format, cp.precision)
        if not parts:
            have = sorted({f"{a['format']}/{a['precision']}" for p in
                           bundle.component(DENOISER).get("stream", {}).get("parts", [])[:1]
                           for a in p["artifacts"]})
            raise BundleError(f"bundle {bundle.name}: DeepCache needs the denoiser's stream parts in "
                              f"{cp.format}/{cp.precision}; it has {', '.join(have) or 'none'}", hint=CONVERT_HINT)
        shallow_path(parts, branch)
    on = interval > 1
    # Resident when on: the cache lives in the open session, and every part stays open anyway.
    comps = {**plan.components, DENOISER: replace(cp, deep_cache=interval if on else 0, deep_cache_branch=branch,
                                                  resident=cp.resident or on)}
    notes = list(plan.notes)
    if on and not cp.resident:
        notes.append("denoiser: kept resident for DeepCache (its parts stay open between steps)")
    return replace(plan, components=comps, notes=notes)


def label(cp: ComponentPlan) -> str:
    """'+deepcache3' (down0) or '+deepcache3/conv_in'; '' when off."""
    if not cp.deep_cache:
        return ""
    return f"+deepcache{cp.deep_cache}" + ("" if cp.deep_cache_branch == DEFAULT_BRANCH else f"/{cp.deep_cache_branch}")


class DeepCacheSession:
    """The denoiser's stream parts behind one session's ``run`` surface, full or shallow per step.

    ``begin_run()`` before a generation and ``begin_call(step)`` before each denoiser call (the
    pipeline's ``Sessions`` does both) drive the schedule: the first step of a run is full, then
    every ``interval``-th. A call without a step, or whose batch or size differs from the cached
    one, runs full. Everything stays open: the point is speed. Where the engine joins graphs
    (``Runtime.open_chain``) the parts are two sessions, deep and shallow; else one per part."""

    def __init__(self, bundle: Bundle, component: str, *, runtime: str, format: str, precision: str,
                 interval: int, branch: str = DEFAULT_BRANCH, device: str = "auto", threads: int | None = None,
                 options: dict[str, Any] | None = None) -> None:
        self.interval = check_interval(interval)
        self.branch = check_branch(branch)
        self.parts = bundle.stream_parts(component, format, precision)
        if not self.parts:
            raise BundleError(f"bundle {bundle.name}: component {component} has no {format}/{precision} stream "
                              "parts, which DeepCache runs", hint=CONVERT_HINT)
        self.name = f"{runtime} (deepcache {self.interval}/{self.branch})"
        self.component = component
        self.path = self.parts[0].artifact.path.parent
        ins, outs = bundle.signature(component)
        self.inputs: list[TensorSpec] = ins
        self.outputs: list[TensorSpec] = outs
        self._input_names = {t.name for t in ins}
        self.shallow = shallow_path(self.parts, self.branch)
        self.kept = cached_names(self.parts, self.shallow, self._input_names)
        self.call_timeout: float | None = None
        options = dict(options or {})
        for key, value in chained_options(runtime).items():  # a plan may still say otherwise
            options.setdefault(key, value)
        self._sessions: list[Runtime] = []
        # Joined, where the engine can (OpenVINO): two graphs, the deep one (the parts that make the
        # kept tensors, which are its outputs) and the shallow path; a full step runs both, a cached
        # step the shallow one. No node is compiled twice but the small embed part: each compiled
        # node costs memory of its own (an SD up block ~20 MB in OpenVINO whatever its weights), and
        # one graph plans one activation arena where parts have one each. Else a session per part.
        self.joined = False
        self.deep = deep_path(self.parts, self.kept)
        try:
            kw = {"device": device, "threads": threads, "options": options}
            chains = ((self.deep, self.kept), (self.shallow, [t.name for t in outs]))
            for idx, names in chains:
                path = [self.parts[i] for i in idx]
                rt = open_chain([p.artifact.path for p in path], runtime, names,
                                verified=[f for p in path for f in p.artifact.files], **kw)
                if rt is None:  # the engine cannot join graphs (the same answer for both)
                    break
                self._sessions.append(rt)
            self.joined = bool(self._sessions)
            if not self.joined:
                for p in self.parts:
                    self._sessions.append(open_artifact(p.artifact.path, runtime, verified=p.artifact.files, **kw))
        except BaseException:
            self.close()
            raise
        self.begin_run()

    # -- the schedule ------------------------------------------------------------------------------
    def begin_run(self) -> None:
        """A new generation: drop the cache; its first step is full."""
        self._cache: dict[int, tuple[tuple, dict[str, np.ndarray]]] = {}
        self._step: int | None = None
        self._index = -1  # steps seen this run - 1
        self._ordinal = 0  # denoiser calls so far in this step - 1
        self._full = True
        self.part_calls = [0] * len(self.parts)  # this run's, for tests and reports
        self.full_calls = self.shallow_calls = 0

    def begin_call(self, step: int | None) -> None:
        if step is None:
            self._full, self._ordinal = True, 0
            return
        if self._step is not None and step < self._step:  # a new run that did not say so
            self.begin_run()
        if step == self._step:
            self._ordinal += 1
        else:
            self._step, self._index, self._ordinal = step, self._index + 1, 0
        self._full = self._index % self.interval == 0

    # -- the session surface -----------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if set(feeds) != self._input_names:
            raise InputError(f"{self.component}: inputs {sorted(feeds)} do not match the model's "
                             f"{sorted(self._input_names)}")
        shapes = tuple(sorted((k, np.shape(v)) for k, v in feeds.items()))
        hit = None if self._full else self._cache.get(self._ordinal)
        if hit is not None and hit[0] != shapes:
            hit = None
        env: dict[str, np.ndarray] = dict(feeds)
        if hit is not None:
            env.update(hit[1])
            order: list[int] | range = self.shallow
            self.shallow_calls += 1
        else:
            order = range(len(self.parts))
            self.full_calls += 1
        if self.joined:
            for rt in self._sessions if hit is None else self._sessions[1:]:
                rt.call_timeout = self.call_timeout
                env.update(rt.run({t.name: env[t.name] for t in rt.inputs}))
            for i in order:
                self.part_calls[i] += 1
        else:
            for i in order:
                part, rt = self.parts[i], self._sessions[i]
                rt.call_timeout = self.call_timeout
                env.update(rt.run({t.name: env[t.name] for t in part.inputs}))
                self.part_calls[i] += 1
        if hit is None:
            # Owned copies: an engine may reuse its output buffers on its next call.
            self._cache[self._ordinal] = (shapes, {n: np.array(env[n], copy=True) for n in self.kept})
        return {t.name: env[t.name] for t in self.outputs}

    def stats(self) -> dict[str, Any]:
        return {"interval": self.interval, "branch": self.branch, "full_calls": self.full_calls,
                "shallow_calls": self.shallow_calls}

    def release_scratch(self) -> None:
        """Each part's intermediate tensors back, as a whole-graph session gives its own back (called
        between components: the decoder would otherwise run beside every part's kept activations)."""
        for rt in self._sessions:
            rt.release_scratch()

    def close(self) -> None:
        for rt in self._sessions:
            rt.close()
        self._sessions = []

    def __enter__(self) -> DeepCacheSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["BRANCHES", "DEFAULT_BRANCH", "DeepCacheSession", "check_interval", "check_branch", "shallow_path",
           "deep_path", "with_deep_cache", "label"]
