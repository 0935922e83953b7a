"""Dynamic batching: requests that arrive together run as one batch, each still answered on its own.

The event loop only queues work and waits; the model runs on one worker thread (PyTorch and ONNX Runtime use the
cores inside each call, so a second model thread would only make them fight). The worker takes the oldest request,
then, while other requests are still arriving (being read or decoded), gathers more until the batch holds
``max_batch`` images or ``max_wait_ms`` have passed since that first one; a request alone is not held back,
runs them together and hands each request its own rows. Requests of two kinds (uploaded images, preprocessed
tensors) never share a batch. The queue is bounded (``max_queue`` requests): a full queue answers 503 at once
instead of letting latency grow without limit.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional


class QueueFull(Exception):
    """More than ``max_queue`` requests are waiting."""


@dataclass
class Job:
    kind: str  # "images" | "tensor"
    payload: Any  # a list of Prepared, or an N x 3 x S x S tensor
    size: int  # images in this request
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(self, run: Callable[[str, list[Any]], list[Any]], *, max_batch: int = 8, max_wait_ms: float = 5.0,
                 max_queue: int = 64, on_batch: Optional[Callable[[int, float], None]] = None) -> None:
        """run(kind, payloads) -> one result per payload, called on the worker thread with a whole batch."""
        self.run, self.on_batch = run, on_batch
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000.0, max_queue
        self.queue: collections.deque[Job] = collections.deque()
        self.wakeup: Optional[asyncio.Event] = None
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="googlenet-infer")
        self.task: Optional[asyncio.Task] = None
        self.in_flight = 0  # jobs taken from the queue and not yet answered
        self.arriving = 0  # requests being read or decoded, announced by ``expect``: worth waiting for

    @property
    def depth(self) -> int:
        return len(self.queue)

    def start(self) -> None:
        self.wakeup = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._worker())

    async def stop(self) -> None:
        """Finishes what is queued and running, then stops the worker (SIGTERM drains through here)."""
        while self.queue or self.in_flight:
            await asyncio.sleep(0.01)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.executor.shutdown(wait=True)

    def arrival(self) -> "Arrival":
        """``with batcher.arrival() as a: ... submit(..., arrival=a)``: counts a request as on its way (its body
        being read or decoded) from the start of the block until it is queued or fails."""
        return Arrival(self)

    async def submit(self, kind: str, payload: Any, size: int, timeout_s: float,
                     arrival: Optional["Arrival"] = None) -> Any:
        """Queues one request and waits for its result; QueueFull when the queue is full, TimeoutError past
        ``timeout_s`` (the job is then dropped if it has not started)."""
        if arrival is not None:  # queued or refused, it is no longer on its way
            arrival.done()
        if len(self.queue) >= self.max_queue:
            raise QueueFull()
        job = Job(kind, payload, size, asyncio.get_running_loop().create_future())
        self.queue.append(job)
        self.wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout_s)
        except asyncio.TimeoutError:
            job.future.cancel()  # the worker skips it if it has not started
            raise

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
            first = self.queue[0]
            # Gather: while more requests are on their way, wait until the batch is full or the oldest request has
            # waited max_wait. With nothing else arriving, a lone request runs at once (no idle wait at low load).
            while self._fill(first.kind) < self.max_batch and self.arriving > 0:
                left = first.queued_at + self.max_wait - time.perf_counter()
                if left <= 0:
                    break
                self.wakeup.clear()
                try:
                    await asyncio.wait_for(self.wakeup.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch = self._take(first.kind)
            if not batch:
                continue
            self.in_flight += len(batch)
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self.run, first.kind, [j.payload for j in batch])
                if self.on_batch is not None:  # counted before anyone is answered, so /metrics is never behind
                    self.on_batch(sum(j.size for j in batch), time.perf_counter() - started)
            except Exception as e:  # a bug, not a client's mistake: every request of the batch gets it
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
            else:
                for job, result in zip(batch, results):
                    if not job.future.done():
                        job.future.set_result(result)
            finally:
                self.in_flight -= len(batch)

    def _fill(self, kind: str) -> int:
        """Images that the next batch would hold: the queued jobs of ``kind`` in order, up to max_batch."""
        n = 0
        for job in self.queue:
            if job.kind != kind or (n and n + job.size > self.max_batch):
                break
            n += job.size
        return n

    def _take(self, kind: str) -> list[Job]:
        batch, n = [], 0
        while self.queue and self.queue[0].kind == kind:
            job = self.queue[0]
            if n and n + job.size > self.max_batch:
                break
            self.queue.popleft()
            if job.future.done():  # its client gave up (deadline) before it ran: skip the work
                continue
            batch.append(job)
            n += job.size
        return batch


class Arrival:
    def __init__(self, batcher: Batcher) -> None:
        self.batcher, self.counted = batcher, False

    def __enter__(self) -> "Arrival":
        self.batcher.arriving += 1
        self.counted = True
        return self

    def done(self) -> None:
        if self.counted:
            self.counted = False
            self.batcher.arriving -= 1
            if self.batcher.wakeup is not None:
                self.batcher.wakeup.set()

    def __exit__(self, *exc) -> None:
        self.done()
