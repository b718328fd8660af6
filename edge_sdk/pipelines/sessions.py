"""Runtime sessions per component, opened once and reused; non-resident ones released after use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.errors import InputError, NumericalFaultError
from edge_sdk.measure.memory import check_cap
from edge_sdk.pipelines.fallback import fallback_note, fp32_fallback
from edge_sdk.planning.plan import ComponentPlan, Plan
from edge_sdk.runtimes.base import Runtime
from edge_sdk.runtimes.registry import open_artifact


class Sessions:
    def __init__(self, bundle: Bundle, plan: Plan) -> None:
        self.bundle = bundle
        self.plan = plan
        self._open: dict[str, Runtime] = {}
        self._last: str | None = None  # the component run last: its scratch goes when another runs
        self.notes: list[str] = []  # what changed during the run (e.g. an fp32 fallback)
        # Seconds one component call may take (None: EDGE_SDK_CALL_TIMEOUT or the default; runtimes/watch.py).
        self.call_timeout: float | None = None

    def _load(self, component: str) -> Runtime:
        if component not in self._open:
            cp = self.plan.components[component]
            if cp.deep_cache:  # the stream parts, full or shallow per step (pipelines/deep_cache.py)
                from edge_sdk.pipelines.deep_cache import DeepCacheSession

                self._open[component] = DeepCacheSession(  # type: ignore[assignment]
                    self.bundle, component, runtime=cp.runtime, format=cp.format, precision=cp.precision,
                    interval=cp.deep_cache, branch=cp.deep_cache_branch, device=cp.device, threads=cp.threads,
                    options=cp.options)
            elif cp.stream:  # parts opened and released in turn behind one run() (pipelines/streamed.py)
                from edge_sdk.pipelines.streamed import StreamedSession

                self._open[component] = StreamedSession(  # type: ignore[assignment]
                    self.bundle, component, runtime=cp.runtime, format=cp.format, precision=cp.precision,
                    device=cp.device, threads=cp.threads, options=cp.options, budget_bytes=cp.stream_budget)
            else:
                art = self.bundle.artifact(component, cp.format, cp.precision, cp.variant)
                # verified=: the runtime hashes the bytes it loads, so a file swapped since load() is refused
                self._open[component] = open_artifact(art.path, cp.runtime, device=cp.device, threads=cp.threads,
                                                      options=cp.options, verified=art.files)
        self._open[component].call_timeout = self.call_timeout
        return self._open[component]

    @contextmanager
    def use(self, component: str) -> Iterator[Runtime]:
        """The component's session; released afterwards unless the plan keeps it resident."""
        if self._last not in (None, component) and self._last in self._open:
            # Only the running component's intermediate tensors in memory: the text encoder's and the
            # decoder's would otherwise sit beside the denoiser's through the loop (runtime permitting).
            release = getattr(self._open[self._last], "release_scratch", None)  # a StreamedSession holds none
            if release is not None:
                release()
        self._last = component
        rt = self._load(component)
        try:
            yield rt
        finally:
            if not self.plan.components[component].resident:
                self.release(component)

    def release(self, component: str) -> None:
        rt = self._open.pop(component, None)
        if rt is not None:
            rt.close()

    def close(self) -> None:
        for name in list(self._open):
            self.release(name)

    def begin_run(self) -> None:
        """A new generation: per-run state goes (notes; a DeepCache session's cached features)."""
        self.notes.clear()
        for rt in self._open.values():
            if hasattr(rt, "begin_run"):
                rt.begin_run()

    def set_deep_cache(self, component: str, source: ComponentPlan) -> None:
        """Run ``component`` with ``source``'s DeepCache settings from now on; its session reopens if
        that changes it (the caller has checked the bundle: ``deep_cache.with_deep_cache``)."""
        cp = self.plan.components[component]
        new = replace(cp, deep_cache=source.deep_cache, deep_cache_branch=source.deep_cache_branch,
                      resident=cp.resident or bool(source.deep_cache))
        if new != cp:
            self.release(component)
            self.plan = replace(self.plan, components={**self.plan.components, component: new})

    def deep_cache_stats(self, component: str) -> dict | None:
        from edge_sdk.pipelines.deep_cache import DeepCacheSession

        rt = self._open.get(component)  # other runtimes may have a ``stats`` of their own (remote's)
        return rt.stats() if isinstance(rt, DeepCacheSession) else None

    def run(self, component: str, feeds: dict[str, np.ndarray], *, step: int | None = None) -> np.ndarray:
        """Run a component, cast feeds to its signature's dtypes, check its first output is finite."""
        with self.use(component) as rt:
            if hasattr(rt, "begin_call"):  # DeepCache: full or shallow by the step
                rt.begin_call(step)
            cast = {spec.name: np.asarray(feeds[spec.name]).astype(spec.dtype, copy=False) for spec in rt.inputs
                    if spec.name in feeds}
            cast.update({k: v for k, v in feeds.items() if k not in cast})
            out = self._run_chunked(rt, component, cast)
        check_cap()  # a memory watcher that saw the cap crossed stops the run here (edge_sdk.measure.memory)
        if not np.isfinite(out).all():
            cp = self.plan.components[component]
            bad = int(np.size(out) - np.isfinite(out).sum())
            # fp16 overflow: retry once with the bundle's fp32 artifact (edge_sdk.pipelines.fallback).
            retry = fp32_fallback(self.bundle, component, cp)
            if retry is not None:
                self.release(component)
                self.plan = replace(self.plan, components={**self.plan.components, component: retry})
                self.notes.append(fallback_note(component, cp, bad, step))
                return self.run(component, feeds, step=step)
            at = f" at step {step}" if step is not None else ""
            raise NumericalFaultError(
                f"{component} ({cp.format} {cp.precision} on {cp.runtime}) produced {bad} NaN/Inf values{at}",
                hint="fp16 overflow is the usual cause: run this component in fp32 (--precision fp32)")
        # A copy we own: ONNX Runtime's outputs are views whose buffer keeps the session's whole
        # arena alive, so a released (non-resident) session's memory would never come back.
        return np.array(out, dtype=np.float32, copy=True)

    def run_all(self, component: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every output of a multi-output component (SDXL's text encoder), in signature order, as float32."""
        with self.use(component) as rt:
            cast = {spec.name: np.asarray(feeds[spec.name]).astype(spec.dtype, copy=False) for spec in rt.inputs}
            outs = rt.run(cast)
            arrays = [np.array(outs[spec.name], dtype=np.float32, copy=True) for spec in rt.outputs]
        check_cap()
        for spec, arr in zip(rt.outputs, arrays, strict=False):
            if not np.isfinite(arr).all():
                raise NumericalFaultError(f"{component} output {spec.name} has NaN/Inf values",
                                          hint="run this component in fp32 (--precision fp32)")
        return arrays

    @staticmethod
    def _run_chunked(rt: Runtime, component: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run once, or in slices when the model's batch axis is fixed (static NPU artifacts)."""
        fixed = rt.inputs[0].shape[0] if rt.inputs and rt.inputs[0].shape else None
        first = np.asarray(next(iter(feeds.values()))) if feeds else np.zeros(())
        n = first.shape[0] if first.ndim else 0
        if not isinstance(fixed, int) or fixed <= 0 or n <= fixed:
            return rt.run(feeds)[rt.outputs[0].name]
        if n % fixed:
            raise InputError(f"{component}: a batch of {n} does not split into the model's fixed batch of {fixed}",
                             hint=f"use a batch that is a multiple of {fixed}")
        return np.concatenate([rt.run({k: v[i:i + fixed] for k, v in feeds.items()})[rt.outputs[0].name]
                               for i in range(0, n, fixed)])
