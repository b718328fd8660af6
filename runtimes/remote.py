"""`remote`: run one component on an Open Inference Protocol (KServe v2) server.

Triton, OpenVINO Model Server, KServe, MLServer or another `edge-sdk serve` all speak it. The
client is ``tritonclient.http`` (not hand-written HTTP). Only the component's tensors travel:
a plan that puts the denoiser remote keeps the text encoder and decoder on the board, so the
prompt text and the final image never leave it.

The path an adapter is opened with is the component's local artifact: it is verified like any
other and is what runs when the server is unreachable (``fallback``), so a board keeps working
offline, more slowly and with the memory the planner did not count for it.

Options: ``url`` (required, ``http://host:port``), ``model`` (name on the server; default the
artifact's component folder), ``timeout`` (seconds per call, default 30), ``retries`` (default 2,
with ``backoff`` seconds doubling, default 0.2), ``fallback`` (a local runtime name, or None for
none; default the first installed runtime that opens the artifact), ``fallback_device``,
``binary`` (the binary tensor extension, default False: JSON works on every server; Triton and
`edge-sdk serve` accept binary), ``token_env`` (an environment variable holding a bearer token).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, ClassVar
from urllib.parse import urlparse

import numpy as np

from edge_sdk.errors import InferenceError, InputError, RuntimeUnavailableError, UsageError
from edge_sdk.manifest import TensorSpec
from edge_sdk.runtimes.base import Runtime

log = logging.getLogger("edge_sdk.runtimes.remote")
V2_TO_NUMPY = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
               "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "FP16": "float16",
               "FP32": "float32", "FP64": "float64"}
# HTTP statuses worth another try (the server is busy or restarting), not a bad request.
TRANSIENT_STATUS = {"429", "502", "503", "504"}


def split_url(url: str) -> tuple[str, bool]:
    """'http://host:port' -> ('host:port', ssl?) as tritonclient wants it."""
    if not isinstance(url, str) or not url:
        raise UsageError("remote runtime: option 'url' is required (e.g. http://10.0.0.5:8000)")
    u = urlparse(url if "://" in url else f"http://{url}")
    if u.scheme not in ("http", "https") or not u.hostname or u.path not in ("", "/"):
        raise UsageError(f"remote runtime: url {url!r} is not http(s)://host:port")
    return u.netloc, u.scheme == "https"


def _client(url: str, timeout: float):
    import tritonclient.http as httpclient

    netloc, ssl = split_url(url)
    return httpclient.InferenceServerClient(netloc, ssl=ssl, connection_timeout=timeout, network_timeout=timeout)


def _transient(e: BaseException) -> bool:
    from tritonclient.utils import InferenceServerException

    if isinstance(e, InferenceServerException):
        return str(e.status()) in TRANSIENT_STATUS
    return isinstance(e, (OSError, TimeoutError)) or type(e).__module__.startswith(("gevent", "geventhttpclient"))


def round_trip_ms(url: str, model: str, *, timeout: float = 5.0, tries: int = 3) -> float:
    """Median time of a model-ready call: the network part of every remote call (for the planner)."""
    client = _client(url, timeout)
    try:
        times = []
        for _ in range(tries):
            t0 = time.perf_counter()
            if not client.is_model_ready(model):
                raise RuntimeUnavailableError(f"model {model!r} is not ready on {url}")
            times.append((time.perf_counter() - t0) * 1000)
        return float(np.median(times))
    finally:
        client.close()


class RemoteRuntime(Runtime):
    name: ClassVar[str] = "remote"
    # Any format: the local fallback artifact is opened by whichever runtime opens its format, and
    # the planner places a component here only when given a URL (never by format alone).
    formats: ClassVar[tuple[str, ...]] = ()
    devices: ClassVar[tuple[str, ...]] = ("auto", "remote")
    plannable: ClassVar[bool] = False
    # tritonclient.http's connections are greenlets of the thread that opened them; its network
    # timeouts and retries bound a call, and Ctrl-C reaches the calling thread directly.
    watched: ClassVar[bool] = False

    @classmethod
    def probe(cls) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            import tritonclient.http  # noqa: F401

            v = version("tritonclient")
        except (ImportError, PackageNotFoundError) as e:
            return {"available": False, "reason": f"tritonclient[http] is not installed ({e})", "version": None,
                    "devices": []}
        return {"available": True, "reason": "", "version": v, "devices": ["remote"],
                "notes": ["runs a component on an Open Inference Protocol server given by the plan's url"]}

    def _open(self) -> None:
        o = self.options
        self.url = o.get("url")
        split_url(self.url)
        self.model = str(o.get("model") or self.path.parents[2].name)
        self.timeout = float(o.get("timeout", 30.0))
        self.retries = int(o.get("retries", 2))
        self.backoff = float(o.get("backoff", 0.2))
        self.binary = bool(o.get("binary", False))
        self.fallback_name = o.get("fallback", "auto")
        self.headers = None
        if o.get("token_env"):
            tok = os.environ.get(o["token_env"])
            if not tok:
                raise UsageError(f"remote runtime: token_env {o['token_env']} is empty or not set")
            self.headers = {"Authorization": f"Bearer {tok}"}
        self.stats = {"calls": 0, "retries": 0, "fallbacks": 0, "seconds": 0.0}
        self._local: Runtime | None = None
        self._client = None
        try:
            self._client = _client(self.url, self.timeout)
            meta = self._with_retries(lambda: self._client.get_model_metadata(self.model, headers=self.headers))
        except Exception as e:  # noqa: BLE001 - unreachable: decided below
            if not _transient(e) and not isinstance(e, InferenceError):
                self.close()
                raise RuntimeUnavailableError(f"remote model {self.model!r} at {self.url}: {e}",
                                              hint="check the model name and that the server serves it") from None
            self._go_local(f"the server is unreachable at open ({e})")
            return
        self.inputs = [self._spec(t) for t in meta["inputs"]]
        self.outputs = [self._spec(t) for t in meta["outputs"]]

    @staticmethod
    def _spec(t: dict[str, Any]) -> TensorSpec:
        dtype = V2_TO_NUMPY.get(t.get("datatype"), "float32")
        return TensorSpec(name=t["name"], dtype=dtype, shape=tuple(d if d >= 0 else f"d{i}"
                                                                  for i, d in enumerate(t["shape"])))

    def _with_retries(self, call):
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return call()
            except Exception as e:  # noqa: BLE001 - only transient failures are retried
                if not _transient(e) or attempt == self.retries:
                    raise
                self.stats["retries"] += 1
                log.warning("remote %s at %s: %s; retrying in %.1fs", self.model, self.url, e, delay)
                time.sleep(delay)
                delay *= 2

    def _go_local(self, why: str) -> None:
        if self.fallback_name is None:
            raise InferenceError(f"remote model {self.model!r} at {self.url}: {why}; no local fallback configured",
                                 hint="start the server, or allow a fallback runtime in the plan")
        from edge_sdk.formats.registry import default_format, format_for_path
        from edge_sdk.planning.plan import usable_runtimes
        from edge_sdk.runtimes.registry import open_artifact, runtimes_for_format

        spec = format_for_path(self.path)
        fmt = spec.name if spec is not None else default_format()
        name = self.fallback_name
        if name == "auto":
            usable = usable_runtimes()
            name = next((r for r in runtimes_for_format(fmt) if r in usable), None)
            if name is None:
                raise InferenceError(f"remote model {self.model!r}: {why}, and no local runtime opens {self.path.name}")
        log.warning("remote %s at %s: %s; running the local artifact %s on %s", self.model, self.url, why,
                    self.path.name, name)
        self._local = open_artifact(self.path, name, device=self.options.get("fallback_device", "auto"),
                                    threads=self.threads)
        self.stats["fallbacks"] += 1
        self.inputs, self.outputs = self._local.inputs, self._local.outputs

    @property
    def active_device(self) -> str:
        return f"local:{self._local.active_device}" if self._local is not None else f"remote:{self.url}"

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._local is not None:
            return self._local.run(feeds)
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException

        from edge_sdk.serve.v2 import v2_datatype

        inputs = []
        for name, arr in feeds.items():
            inp = httpclient.InferInput(name, list(arr.shape), v2_datatype(str(arr.dtype)))
            inp.set_data_from_numpy(arr, binary_data=self.binary)
            inputs.append(inp)
        outputs = [httpclient.InferRequestedOutput(t.name, binary_data=self.binary) for t in self.outputs]
        t0 = time.perf_counter()
        try:
            res = self._with_retries(lambda: self._client.infer(self.model, inputs, outputs=outputs,
                                                                headers=self.headers))
        except InferenceServerException as e:
            if str(e.status()) in TRANSIENT_STATUS:
                self._go_local(f"the server kept answering {e.status()}")
                return self._local.run(feeds)
            raise InferenceError(f"remote model {self.model!r} at {self.url} refused the call: {e.message()}",
                                 hint="the server's model signature differs from the bundle's?") from None
        except Exception as e:  # noqa: BLE001
            if not _transient(e):
                raise InferenceError(f"remote model {self.model!r} at {self.url}: {type(e).__name__}: {e}") from None
            self._go_local(f"unreachable after {self.retries + 1} tries ({type(e).__name__}: {e})")
            return self._local.run(feeds)
        self.stats["calls"] += 1
        self.stats["seconds"] += time.perf_counter() - t0
        out = {}
        for t in self.outputs:
            a = res.as_numpy(t.name)
            if a is None:
                raise InputError(f"remote model {self.model!r} returned no output {t.name!r}")
            out[t.name] = a
        return out

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
            self._local = None
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass
            self._client = None
