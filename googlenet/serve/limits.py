"""Reading a request body within bounds, and the JSON error responses.

The size limit is checked twice: on the declared Content-Length before a byte is read, and on the bytes actually
received as they stream in (a client may send no length, chunked encoding, or lie). Each chunk must arrive within
``read_timeout_s`` and the whole body within ``body_timeout_s``: a client that trickles its body (a slowloris, one
byte every few seconds) is answered 408 then. A client that hangs up mid-body ends the request quietly (no
traceback in the log), counted as a 400.

An oversized body is read and discarded up to ``DRAIN_BYTES`` more before the 413 goes out: a server that answers
and closes with the client's bytes unread makes the kernel reset the connection, and clients that send the whole
body before reading the answer (Python's urllib and requests) then report "Connection reset by peer" instead of the
413. Past that bound, or the time bounds, the connection is dropped: nothing a client sends is read without limit.
"""

from __future__ import annotations

import asyncio
import time
from typing import Optional

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from .model import RequestError

DRAIN_BYTES = 16 * 1024 * 1024  # read and discarded past the limit, so that every client sees its 413


async def read_body(request: Request, *, max_bytes: int, read_timeout_s: float, body_timeout_s: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise RequestError(400, "Content-Length must be an integer") from None
    chunks, received = [], 0
    stream = request.stream().__aiter__()
    deadline = time.monotonic() + body_timeout_s
    if declared is not None and length > max_bytes:
        if length <= max_bytes + DRAIN_BYTES:
            await _drain(stream, length, read_timeout_s, deadline)
        raise RequestError(413, f"body of {length:,} bytes is over the limit of {max_bytes:,} bytes")
    while True:
        wait = min(read_timeout_s, max(deadline - time.monotonic(), 0.0))
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), wait)
        except StopAsyncIteration:
            break
        except ClientDisconnect:
            raise RequestError(400, "the client closed the connection before sending the whole body") from None
        except asyncio.TimeoutError:
            if wait < read_timeout_s:
                raise RequestError(408, f"the whole body did not arrive within {body_timeout_s:g} s") from None
            raise RequestError(408, f"the body did not arrive within {read_timeout_s:g} s") from None
        received += len(chunk)
        if received > max_bytes:
            await _drain(stream, max_bytes + DRAIN_BYTES - received, read_timeout_s, deadline)
            raise RequestError(413, f"body over the limit of {max_bytes:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _drain(stream, budget: int, read_timeout_s: float, deadline: float) -> None:
    """Reads and drops up to ``budget`` bytes of the rest of the body within the time bounds; stops quietly at
    the end of the body, at the budget, on a timeout or when the client hangs up."""
    while budget > 0:
        wait = min(read_timeout_s, max(deadline - time.monotonic(), 0.0))
        try:
            budget -= len(await asyncio.wait_for(stream.__anext__(), wait))
        except (StopAsyncIteration, ClientDisconnect, asyncio.TimeoutError):
            return


def error_response(status: int, message: str, headers: Optional[dict] = None) -> JSONResponse:
    """The protocol's error body: ``{"error": "..."}``, one line."""
    return JSONResponse({"error": " ".join(str(message).split())[:500]}, status_code=status, headers=headers)


class HeaderLimit:
    """ASGI middleware: a request with more than ``max_count`` headers or ``max_bytes`` of them is answered 431
    before any route runs. uvicorn's h11 bound applies only to a head that arrives in pieces; a flood sent in one
    packet would otherwise reach the application whole."""

    def __init__(self, app, max_count: int = 100, max_bytes: int = 16 * 1024) -> None:
        self.app, self.max_count, self.max_bytes = app, max_count, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            headers = scope.get("headers") or []
            size = sum(len(k) + len(v) for k, v in headers)
            if len(headers) > self.max_count or size > self.max_bytes:
                response = error_response(431, f"request has {len(headers)} headers ({size:,} bytes); the limit is "
                                               f"{self.max_count} headers and {self.max_bytes:,} bytes")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
