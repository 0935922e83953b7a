"""Reading a request body within bounds, and the JSON error responses.

The size limit is checked twice: on the declared Content-Length before a byte is read, and on the bytes actually
received as they stream in (a client may send no length, chunked encoding, or lie). Each chunk must arrive within
``read_timeout_s``, so a client that trickles its body (a slowloris) holds a connection for that long at most.
"""

from __future__ import annotations

import asyncio
from typing import Optional

from starlette.requests import Request
from starlette.responses import JSONResponse

from .model import RequestError


async def read_body(request: Request, *, max_bytes: int, read_timeout_s: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise RequestError(400, "Content-Length must be an integer") from None
        if length > max_bytes:
            raise RequestError(413, f"body of {length:,} bytes is over the limit of {max_bytes:,} bytes")
    chunks, received = [], 0
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), read_timeout_s)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise RequestError(408, f"the body did not arrive within {read_timeout_s:g} s") from None
        received += len(chunk)
        if received > max_bytes:
            raise RequestError(413, f"body over the limit of {max_bytes:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


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
