"""The ASGI app: OpenAI-compatible images, Open Inference Protocol v2, Prometheus metrics.

Starlette rather than FastAPI: FastAPI adds pydantic (and pydantic-core, a ~2 MB native wheel that
piwheels does not always build for armv7) for validation we do by hand against the board's
limits anyway; Starlette is pure Python (see docs/serve.md for the install sizes measured).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from edge_sdk.errors import (
    CancelledError,
    EdgeSDKError,
    InferenceError,
    InputError,
    MemoryCapError,
    PlanError,
    UsageError,
)
from edge_sdk.serve.limits import FieldError, Limits, check_request, request_size
from edge_sdk.serve.metrics import CONTENT_TYPE_LATEST, Metrics
from edge_sdk.serve.v2 import decode_infer_request, encode_outputs, model_metadata
from edge_sdk.serve.worker import Job, QueueFullError, ShuttingDownError, Worker

log = logging.getLogger("edge_sdk.serve")
# Fields of OpenAI's images API that mean nothing here but that clients send: accepted, ignored.
OPENAI_IGNORED = {"model", "quality", "style", "user", "background", "moderation", "output_format",
                  "output_compression", "partial_images"}
OUR_FIELDS = {"prompt", "negative_prompt", "n", "size", "response_format", "steps", "seed", "guidance", "sampler",
              "stream", "class_labels"}
# Paths open without the bearer token: orchestrators probe them.
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")
MAX_V1_BODY = 1 << 20  # a prompt and a few numbers


@dataclass
class ServeConfig:
    limits: Limits
    model_name: str = "edge-sdk"
    token: str | None = None
    max_queue: int = 4
    max_infer_body: int = 64 << 20  # v2 tensors as JSON or binary
    retry_after_s: int = 2
    extra_info: dict[str, Any] = field(default_factory=dict)


def error_response(status: int, message: str, *, type_: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error body of /v1 (OpenAI's shape): {"error": {"message", "type", "param", "code"}}."""
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": status}},
                        status_code=status, headers=headers)


def classify(e: BaseException) -> tuple[int, str]:
    """HTTP status and error type for an exception (shared by /v1 and /v2)."""
    if isinstance(e, QueueFullError):
        return 429, "queue_full"
    if isinstance(e, ShuttingDownError):
        return 503, "shutting_down"
    if isinstance(e, (FieldError, UsageError, InputError)):
        return 400, "invalid_request_error"
    if isinstance(e, (MemoryCapError, PlanError)):
        return 503, "insufficient_memory"
    if isinstance(e, CancelledError):
        return 499, "cancelled"
    if isinstance(e, InferenceError):
        return 500, "inference_error"
    if isinstance(e, EdgeSDKError):
        return 500, "server_error"
    return 500, "server_error"


def _message(e: BaseException) -> str:
    if isinstance(e, EdgeSDKError):
        return str(e)
    return f"internal error ({type(e).__name__}); see the server log"


class BearerAuth:
    """Pure ASGI middleware (it does not buffer streams nor hide disconnects, unlike BaseHTTPMiddleware)."""

    def __init__(self, app: Callable, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope, receive, send) -> None:
        if self.token is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        auth = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, given = auth.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token):
            await self.app(scope, receive, send)
            return
        resp = error_response(401, "missing or wrong bearer token", type_="authentication_error",
                              headers={"WWW-Authenticate": 'Bearer realm="edge-sdk"'})
        await resp(scope, receive, send)


def build_app(generator: Any, config: ServeConfig) -> Callable:
    """The ASGI app serving ``generator`` (an ``edge_sdk.Generator``, loaded once, closed on shutdown)."""
    metrics = Metrics()
    worker = Worker(config.max_queue, on_depth=metrics.queue_depth.set)
    bundle = generator.bundle
    text = bundle.model.get("conditioning") == "text"
    diffusion = bundle.model.get("kind") != "gan"
    state = {"ready": True}

    def update_in_flight() -> None:
        metrics.in_flight.set(worker.busy)

    # -- helpers ---------------------------------------------------------------------------------
    async def read_json(request: Request, limit: int) -> dict[str, Any]:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise _HTTPError(413, f"request body over {limit} bytes", "invalid_request_error")
        body = await _read_limited(request, limit)
        try:
            data = json.loads(body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _HTTPError(400, f"request body is not JSON: {e}", "invalid_request_error") from None
        if not isinstance(data, dict):
            raise _HTTPError(400, "request body must be a JSON object", "invalid_request_error")
        return data

    def admit(endpoint: str) -> Job:
        try:
            job = worker.admit()
        except (QueueFullError, ShuttingDownError) as e:
            metrics.rejected.labels("queue_full" if isinstance(e, QueueFullError) else "shutting_down").inc()
            raise
        update_in_flight()
        return job

    async def run_job(job: Job, fn: Callable[[Job], Any]) -> Any:
        try:
            return await worker.run(job, fn)
        finally:
            update_in_flight()

    async def watch(request: Request, task: asyncio.Task, job: Job) -> None:
        """Wait for ``task``; cancel its job when the client disconnects meanwhile."""
        while not task.done():
            await asyncio.wait({task}, timeout=0.05)
            if not task.done() and await request.is_disconnected():
                job.cancel()
                metrics.cancelled.inc()
                log.info("client disconnected: cancelling its run")
                break

    # -- /v1 -------------------------------------------------------------------------------------
    def parse_generation(data: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(data) - OUR_FIELDS - OPENAI_IGNORED)
        if unknown:
            raise FieldError(unknown[0], f"unknown field(s) {unknown}",
                             hint=f"fields: {', '.join(sorted(OUR_FIELDS))}")
        prompt = data.get("prompt")
        if text and (not isinstance(prompt, str) or not prompt.strip()):
            raise FieldError("prompt", "prompt must be a non-empty string for this text-to-image model")
        if not text and prompt not in (None, ""):
            raise FieldError("prompt", f"model {config.model_name} is not text-conditioned; send no prompt")
        fmt = data.get("response_format", "b64_json")
        if fmt != "b64_json":
            raise FieldError("response_format", f"response_format {fmt!r} is not served here",
                             hint="use 'b64_json' (no URLs: images are never stored on the board)")
        n = data.get("n", 1)
        width, height = request_size(data.get("size"), config.limits)
        steps = data.get("steps")
        check_request(config.limits, width=width, height=height, n=n, steps=steps)
        seed = data.get("seed")
        if seed is None:
            seed = int(np.random.default_rng().integers(0, 2**31 - 1))
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise FieldError("seed", f"seed must be a non-negative integer, got {seed!r}")
        guidance = data.get("guidance")
        if guidance is not None and (isinstance(guidance, bool) or not isinstance(guidance, (int, float))
                                     or not 0 <= guidance <= 50):
            raise FieldError("guidance", f"guidance must be a number from 0 to 50, got {guidance!r}")
        sampler = data.get("sampler")
        if sampler is not None:
            from edge_sdk.samplers import available_samplers

            if not isinstance(sampler, str) or sampler not in available_samplers():
                raise FieldError("sampler", f"unknown sampler {sampler!r}",
                                 hint=f"samplers: {', '.join(available_samplers())}")
        neg = data.get("negative_prompt")
        if neg is not None and (not text or not isinstance(neg, str)):
            raise FieldError("negative_prompt", "negative_prompt must be a string (text-to-image models only)")
        labels = data.get("class_labels")
        if labels is not None and not (isinstance(labels, list) and all(isinstance(x, int) and not isinstance(x, bool)
                                                                         for x in labels)):
            raise FieldError("class_labels", "class_labels must be a list of integers")
        stream = data.get("stream", False)
        if not isinstance(stream, bool):
            raise FieldError("stream", "stream must be true or false")
        kwargs: dict[str, Any] = dict(seed=seed, batch=n)
        if diffusion:
            kwargs.update(steps=steps, guidance=None if guidance is None else float(guidance), sampler=sampler,
                          height=height, width=width)
        if text:
            kwargs.update(prompt=[prompt] * n, negative_prompt=None if neg is None else [neg] * n)
        if labels is not None:
            kwargs["class_labels"] = labels
        return {"kwargs": kwargs, "stream": stream, "size": f"{width}x{height}"}

    def generate_fn(kwargs: dict[str, Any], on_step: Callable[[Any], None] | None) -> Callable[[Job], Any]:
        def fn(job: Job):
            last = [time.perf_counter()]

            def callback(info) -> bool:
                now = time.perf_counter()
                metrics.step_seconds.observe(now - last[0])
                last[0] = now
                if on_step is not None:
                    on_step(info)
                return not job.cancelled

            kw = dict(kwargs)
            if diffusion:
                kw["callback"] = callback
            return generator.generate(**kw)
        return fn

    def result_body(result: Any, parsed: dict[str, Any]) -> dict[str, Any]:
        data = [{"b64_json": base64.b64encode(encode_png(img)).decode("ascii")} for img in result.images]
        metrics.images.inc(len(data))
        kw = parsed["kwargs"]
        return {"created": int(time.time()), "data": data,
                "edge_sdk": {"seed": kw["seed"], "size": parsed["size"],
                             "steps": result.info.get("steps", kw.get("steps")),
                             "timings": result.timings, "notes": result.info.get("notes", [])}}

    async def images_generations(request: Request) -> Response:
        t0 = time.perf_counter()
        status = 500
        try:
            data = await read_json(request, MAX_V1_BODY)
            parsed = parse_generation(data)
            job = admit("images")
            if parsed["stream"]:
                status = 200
                return StreamingResponse(sse_stream(request, job, parsed, t0), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            task = asyncio.create_task(run_job(job, generate_fn(parsed["kwargs"], None)))
            await watch(request, task, job)
            result = await task
            status = 200
            return JSONResponse(result_body(result, parsed))
        except _HTTPError as e:
            status = e.status
            return error_response(e.status, e.message, type_=e.type_)
        except BaseException as e:  # noqa: BLE001 - every failure gets the one error body
            if isinstance(e, asyncio.CancelledError):
                raise
            status, type_ = classify(e)
            if status == 500:
                log.exception("generation failed")
            headers = {"Retry-After": str(config.retry_after_s)} if status in (429, 503) else None
            return error_response(status, _message(e), type_=type_, param=getattr(e, "param", None), headers=headers)
        finally:
            metrics.requests.labels("images", str(status)).inc()
            if status != 200 or not locals().get("parsed", {}).get("stream"):
                metrics.latency.labels("images").observe(time.perf_counter() - t0)

    async def sse_stream(request: Request, job: Job, parsed: dict[str, Any], t0: float) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def on_step(info) -> None:
            loop.call_soon_threadsafe(events.put_nowait, {"type": "image_generation.progress", "step": info.index + 1,
                                                          "total": info.total, "progress": round(info.progress, 4)})

        task = asyncio.create_task(run_job(job, generate_fn(parsed["kwargs"], on_step)))
        try:
            while not (task.done() and events.empty()):
                # uvicorn drops writes to a closed connection silently: ask, every event and tick.
                if await request.is_disconnected():
                    return  # the finally below cancels the run
                try:
                    ev = await asyncio.wait_for(events.get(), timeout=0.1)
                except asyncio.TimeoutError:
                    continue
                yield f"event: {ev['type']}\ndata: {json.dumps(ev)}\n\n"
            try:
                body = result_body(task.result(), parsed)
                yield ("event: image_generation.completed\n"
                       f"data: {json.dumps({'type': 'image_generation.completed', **body})}\n\n")
            except Exception as e:  # noqa: BLE001 - reported as an event: the 200 header is already sent
                status, type_ = classify(e)
                err = {"message": _message(e), "type": type_, "param": getattr(e, "param", None), "code": status}
                yield f"event: error\ndata: {json.dumps({'type': 'error', 'error': err})}\n\n"
        finally:
            if not task.done():
                job.cancel()
                metrics.cancelled.inc()
                log.info("stream client disconnected: cancelling its run")
            metrics.latency.labels("images").observe(time.perf_counter() - t0)

    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": config.model_name, "object": "model",
                                                         "owned_by": "edge-sdk"}],
                             "limits": config.limits.to_json()})

    # -- /v2 (Open Inference Protocol) -----------------------------------------------------------
    def v2_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)  # the protocol's shape

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        ok = state["ready"] and worker.accepting
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def server_metadata(request: Request) -> Response:
        from edge_sdk import __version__

        return JSONResponse({"name": "edge-sdk", "version": __version__, "extensions": ["binary_tensor_data"]})

    def component(request: Request) -> str:
        name = request.path_params["name"]
        if name not in bundle.components:
            raise _HTTPError(404, f"no model {name!r}; models: {', '.join(bundle.components)}", "not_found")
        return name

    async def v2_model(request: Request) -> Response:
        try:
            name = component(request)
        except _HTTPError as e:
            return v2_error(e.status, e.message)
        return JSONResponse(model_metadata(bundle, name, generator.plan))

    async def v2_model_ready(request: Request) -> Response:
        try:
            component(request)
        except _HTTPError as e:
            return v2_error(e.status, e.message)
        return JSONResponse({"name": request.path_params["name"], "ready": True})

    async def v2_infer(request: Request) -> Response:
        t0 = time.perf_counter()
        status = 500
        try:
            name = component(request)
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > config.max_infer_body):
                raise _HTTPError(413, f"request body over {config.max_infer_body} bytes", "invalid_request_error")
            body = await _read_limited(request, config.max_infer_body)
            header_len = request.headers.get("inference-header-content-length")
            req_id, feeds, wanted = decode_infer_request(body, header_len)
            job = admit("infer")
            sessions = generator.pipeline.sessions

            def fn(_job: Job) -> dict[str, np.ndarray]:
                with sessions.use(name) as rt:
                    return rt.run(feeds)

            task = asyncio.create_task(run_job(job, fn))
            await watch(request, task, job)
            outputs = await task
            status = 200
            return JSONResponse(encode_outputs(name, req_id, outputs, wanted))
        except _HTTPError as e:
            status = e.status
            return v2_error(e.status, e.message)
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, asyncio.CancelledError):
                raise
            status, _ = classify(e)
            if status == 500:
                log.exception("infer failed")
            headers = {"Retry-After": str(config.retry_after_s)} if status in (429, 503) else None
            return v2_error(status, _message(e), headers)
        finally:
            metrics.requests.labels("infer", str(status)).inc()
            metrics.latency.labels("infer").observe(time.perf_counter() - t0)

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # -- lifecycle -------------------------------------------------------------------------------
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        yield
        # uvicorn calls this after in-flight requests finished (or were cancelled when the
        # graceful-shutdown timeout ran out, which cancels their jobs at the next step).
        state["ready"] = False
        worker.accepting = False
        await asyncio.get_running_loop().run_in_executor(None, worker.close)
        generator.close()
        log.info("edge-sdk serve: stopped")

    routes = [
        Route("/v1/images/generations", images_generations, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models/{name}", v2_model, methods=["GET"]),
        Route("/v2/models/{name}/ready", v2_model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", v2_infer, methods=["POST"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.worker = worker
    app.state.metrics = metrics
    app.state.config = config

    def stop_accepting() -> None:
        """Called on SIGTERM/SIGINT before uvicorn drains connections: new work gets 503."""
        worker.accepting = False
        state["ready"] = False

    app.state.stop_accepting = stop_accepting
    return BearerAuth(app, config.token)


def encode_png(image: np.ndarray) -> bytes:
    """HWC uint8 (RGB or gray) -> PNG bytes, as `edge-sdk run` writes them (edge_sdk.pipelines.result)."""
    import cv2

    img = image if image.shape[-1] == 1 else image[..., ::-1]  # RGB -> BGR for OpenCV
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img))
    if not ok:
        raise InferenceError("could not encode the image as PNG")
    return buf.tobytes()


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, type_: str) -> None:
        super().__init__(message)
        self.status, self.message, self.type_ = status, message, type_


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, refusing (413) once more than ``limit`` bytes arrived (chunked bodies have no length)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _HTTPError(413, f"request body over {limit} bytes", "invalid_request_error")
        chunks.append(chunk)
    return b"".join(chunks)
