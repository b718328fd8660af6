"""A streamed component: its stream parts run in turn, behind one session's ``run`` surface.

The pipeline sees ``inputs``, ``outputs``, ``run(feeds)`` and ``close()`` as for any runtime. A
call opens each part, runs it and releases it (or keeps it open when it fits ``budget_bytes``,
the bytes of part artifacts allowed to stay resident, first parts first), so at most one
non-resident part's weights are in memory at a time. Tensors between parts (the UNet's skip
connections, the time embedding, the text states) are held in a dict and dropped after their last
use. Outputs of parts are copied into arrays we own, so a released session's arena can go back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.errors import BundleError, InputError
from edge_sdk.manifest import TensorSpec
from edge_sdk.planning.stream_plan import kept_parts
from edge_sdk.runtimes.base import Runtime, give_back_freed_memory
from edge_sdk.runtimes.registry import open_artifact


class StreamedSession:
    """The stream parts of ``component`` in one format/precision, run as one model."""

    def __init__(self, bundle: Bundle, component: str, *, runtime: str, format: str, precision: str,
                 device: str = "auto", threads: int | None = None, options: dict[str, Any] | None = None,
                 budget_bytes: int = 0) -> None:
        self.parts = bundle.stream_parts(component, format, precision)
        if not self.parts:
            raise BundleError(f"bundle {bundle.name}: component {component} has no {format}/{precision} stream parts",
                              hint="convert with --stream-parts, or plan without streaming")
        self.name = f"{runtime} (streamed)"
        self.component = component
        self.path = self.parts[0].artifact.path.parent
        self.runtime, self.device, self.threads = runtime, device, threads
        self.options = dict(options or {})
        ins, outs = bundle.signature(component)
        self.inputs: list[TensorSpec] = ins
        self.outputs: list[TensorSpec] = outs
        self._input_names = {t.name for t in ins}
        self._final = {t.name for t in outs}  # never dropped between parts
        # Resident parts: the first ones whose artifacts fit the budget together.
        self.resident: set[int] = {p.index for p in kept_parts(self.parts, budget_bytes)}
        self._open: dict[int, Runtime] = {}
        # Last part that reads each tensor: it is dropped after that part has run.
        self._last_use: dict[str, int] = {}
        for p in self.parts:
            for t in p.inputs:
                self._last_use[t.name] = p.index
        self.loads = 0  # part sessions opened, for tests and reports

    def _session(self, index: int) -> Runtime:
        rt = self._open.get(index)
        if rt is None:
            art = self.parts[index].artifact
            rt = open_artifact(art.path, self.runtime, device=self.device, threads=self.threads,
                               options=self.options, verified=art.files)
            self.loads += 1
            if index in self.resident:
                self._open[index] = rt
        return rt

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if set(feeds) != self._input_names:
            raise InputError(f"streamed {self.component}: inputs {sorted(feeds)} do not match the model's "
                             f"{sorted(self._input_names)}")
        env: dict[str, np.ndarray] = dict(feeds)
        for part in self.parts:
            rt = self._session(part.index)
            try:
                got = rt.run({t.name: env[t.name] for t in part.inputs})
            finally:
                if part.index not in self.resident:
                    rt.close()
                    del rt
                    give_back_freed_memory()
            for t in part.inputs:
                if self._last_use.get(t.name) == part.index and t.name not in self._final:
                    env.pop(t.name, None)
            # Owned copies: an engine's output may be a view into its arena.
            env.update({t.name: np.array(got[t.name], copy=True) for t in part.outputs})
        return {t.name: env[t.name] for t in self.outputs}

    def close(self) -> None:
        for rt in self._open.values():
            rt.close()
        self._open.clear()

    def __enter__(self) -> StreamedSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def part_bytes(self) -> list[int]:
        return [p.artifact.size for p in self.parts]
