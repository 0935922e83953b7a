"""The Starlette application: Open Inference Protocol v2 routes, ``POST /v1/classify``, ``/metrics`` and the page.

Every error is ``{"error": "..."}`` with a 4xx (the client's fault) or 5xx status: 503 with Retry-After when the
queue is full, 504 past the request deadline. Uploads stay in memory (bounded by ``max_body_bytes``) and are
never written to disk; the server fetches no URLs; CORS headers only for ``cors_origin``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from importlib import resources
from typing import Optional

import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from .batcher import Batcher, QueueFull
from .limits import HeaderLimit, error_response, read_body
from .metrics import Metrics
from .model import RequestError, ServedModel
from .protocol import infer_response, model_metadata, parse_infer

PAGE_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src blob: data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@dataclass
class ServeConfig:
    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64
    max_body_bytes: int = 8 * 1024 * 1024
    timeout_s: float = 30.0  # a request's deadline, queue and inference included (504 past it)
    read_timeout_s: float = 10.0  # the longest wait for the next chunk of a body (408 past it)
    body_timeout_s: float = 30.0  # the longest a whole body may take to arrive (408 past it)
    max_decodes: int = 4  # images decoded at once (each can take ~0.5 GB at 40 megapixels); the rest wait
    cors_origin: Optional[str] = None


def create_app(served: ServedModel, config: ServeConfig = ServeConfig()) -> Starlette:
    metrics = Metrics()

    def run_batch(kind: str, payloads: list) -> list:
        """Runs on the batcher's thread: one forward pass for the whole batch, split back per request."""
        if kind == "images":
            probs = served.probs_for_images([p for payload in payloads for p in payload])
        else:
            probs = served.probs_for_tensor(torch.cat(payloads))
        return list(probs.split([len(payload) for payload in payloads]))  # images per request, or tensor rows

    batcher = Batcher(run_batch, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
                      max_queue=config.max_queue, on_batch=metrics.observe_batch)
    metrics.queue_depth.set_function(lambda: batcher.depth)
    state = {"ready": False}

    decoding = asyncio.Semaphore(config.max_decodes)

    def past_deadline() -> RequestError:
        return RequestError(504, f"no answer within the deadline of {config.timeout_s:g} s")

    async def decode(data: bytes, deadline: float):
        """One upload decoded on a worker thread, at most ``max_decodes`` at once; the wait for a turn counts
        against the request's deadline (504), so a flood of uploads queues here instead of exhausting memory."""
        try:
            await asyncio.wait_for(decoding.acquire(), max(deadline - time.perf_counter(), 0.0))
        except asyncio.TimeoutError:
            raise past_deadline() from None
        try:
            return await run_in_threadpool(served.prepare, data)
        finally:
            decoding.release()

    async def classify_images(images: list[bytes], arrival=None):
        started = time.perf_counter()
        deadline = started + config.timeout_s
        prepared = []
        for data in images:
            prepared.append(await decode(data, deadline))
            if time.perf_counter() > deadline:
                raise past_deadline()
        decoded = time.perf_counter()
        probs = await submit("images", prepared, len(prepared), arrival)
        return prepared, probs, {"decode": 1000 * (decoded - started),
                                 "queue_and_infer": 1000 * (time.perf_counter() - decoded)}

    async def submit(kind: str, payload, size: int, arrival=None):
        try:
            return await batcher.submit(kind, payload, size, config.timeout_s, arrival)
        except QueueFull:
            raise RequestError(503, f"the queue is full ({config.max_queue} requests waiting); retry shortly")
        except asyncio.TimeoutError:
            raise past_deadline()

    def endpoint(route: str, handler):
        """``handler(request, started) -> (payload, status)`` as a route: timed and counted under ``route``, with the
        model's name (and version) checked first where the path has one, and a RequestError as its error answer."""
        async def run(request: Request) -> Response:
            started = time.perf_counter()
            try:
                name, version = request.path_params.get("name"), request.path_params.get("version")
                if name is not None and name != served.name:
                    raise RequestError(404, f"unknown model {name[:60]!r}; this server serves {served.name!r}")
                if version not in (None, "1"):
                    raise RequestError(404, f"unknown version {version[:20]!r} of {served.name!r}; it has version '1'")
                payload, status = await handler(request, started)
            except RequestError as e:
                metrics.request(route, e.status, time.perf_counter() - started)
                metrics.error(e.status)
                return error_response(e.status, e.message, {"Retry-After": "1"} if e.status == 503 else None)
            metrics.request(route, status, time.perf_counter() - started)
            return JSONResponse(payload, status_code=status)
        return run

    async def live(request: Request, started: float):
        return {"live": True}, 200

    async def ready(request: Request, started: float):
        return {"ready": state["ready"]}, 200 if state["ready"] else 503

    async def server_metadata(request: Request, started: float):
        return {"name": "googlenet", "version": __version__,
                "extensions": ["classification", "binary_tensor_data"]}, 200

    async def model_meta(request: Request, started: float):
        return model_metadata(served.name, input_size=served.input_size, num_classes=served.num_classes,
                              arch=getattr(served.ensemble.models[0], "arch_name", "googlenet"),
                              precision=served.precision, backend=served.backend, scheme=served.scheme), 200

    async def model_ready(request: Request, started: float):
        return {"name": served.name, "ready": state["ready"]}, 200 if state["ready"] else 503

    async def body(request: Request) -> bytes:
        return await read_body(request, max_bytes=config.max_body_bytes, read_timeout_s=config.read_timeout_s,
                               body_timeout_s=config.body_timeout_s)

    async def infer(request: Request, started: float):
        with batcher.arrival() as arrival:
            data = await body(request)
            # On a worker thread: parsing megabytes of JSON would stall every other request (and /health).
            req = await run_in_threadpool(parse_infer, data, request.headers.get("inference-header-content-length"),
                                          input_size=served.input_size)
            if req.kind == "images":
                _, probs, _ = await classify_images(req.images, arrival)
            else:
                probs = await submit("tensor", req.tensor, req.size, arrival)
        return infer_response(served.name, req, probs, served.labels), 200

    async def classify(request: Request, started: float):
        topk = request.query_params.get("topk", "5")
        if not (topk.isascii() and topk.isdigit() and len(topk) <= 4) or not 1 <= int(topk) <= 1000:
            raise RequestError(400, f"topk must be an integer from 1 to 1000, got {topk[:20]!r}")
        with batcher.arrival() as arrival:
            prepared, probs, timing = await classify_images([await body(request)], arrival)
        timing["total"] = 1000 * (time.perf_counter() - started)
        return {"topk": served.topk(probs, int(topk))[0], "timing_ms": timing,
                "image": {"width": prepared[0].width, "height": prepared[0].height},
                "crops": served.crops_used(prepared[0])}, 200

    async def metrics_route(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def page(request: Request) -> Response:
        html = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
        html = html.replace("{{MODEL}}", served.name)
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff",
                                           "Referrer-Policy": "no-referrer"})

    async def http_error(request: Request, exc: HTTPException) -> Response:
        metrics.request("other", exc.status_code, 0.0)
        metrics.error(exc.status_code)
        return error_response(exc.status_code, exc.detail or "error")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        await run_in_threadpool(served.warm_up)
        state["ready"] = True
        yield
        state["ready"] = False
        await batcher.stop()  # SIGTERM: uvicorn has stopped accepting and waited for open requests; drain the rest

    named = [("", model_meta, "metadata", "GET"), ("/ready", model_ready, "health", "GET"),
             ("/infer", infer, "infer", "POST")]
    routes = [
        Route("/", page, methods=["GET"]),
        Route("/v2/health/live", endpoint("health", live), methods=["GET"]),
        Route("/v2/health/ready", endpoint("health", ready), methods=["GET"]),
        Route("/v2", endpoint("metadata", server_metadata), methods=["GET"]),
        *(Route(prefix + tail, endpoint(route, handler), methods=[method]) for tail, handler, route, method in named
          for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")),
        Route("/v1/classify", endpoint("classify", classify), methods=["POST"]),
        Route("/metrics", metrics_route, methods=["GET"]),
    ]
    middleware = [Middleware(HeaderLimit)]
    if config.cors_origin:
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(Middleware(CORSMiddleware, allow_origins=[config.cors_origin], allow_methods=["GET", "POST"],
                                     allow_headers=["Content-Type", "Inference-Header-Content-Length"]))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error})
    app.state.batcher, app.state.metrics = batcher, metrics
    return app
