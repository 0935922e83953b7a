"""The dynamic batcher on its own: batches fill up to max_batch, wait at most max_wait, a full queue refuses at
once (503), a request past its deadline gives up (504) and its work is skipped, kinds never share a batch."""

import asyncio
import time

import pytest

from googlenet.serve.batcher import Batcher, QueueFull


def run_with(batcher_kwargs, coro_fn, delay=0.0):
    calls = []

    def run(kind, payloads):
        calls.append((kind, list(payloads)))
        time.sleep(delay)
        return [f"{kind}:{p}" for p in payloads]

    async def main():
        b = Batcher(run, **batcher_kwargs)
        b.start()
        try:
            return await coro_fn(b)
        finally:
            await b.stop()

    return asyncio.run(main()), calls


def test_concurrent_requests_share_a_batch_and_each_gets_its_own_answer():
    async def go(b):
        return await asyncio.gather(*(b.submit("images", i, 1, 10) for i in range(8)))

    results, calls = run_with(dict(max_batch=4, max_wait_ms=200, max_queue=64), go)
    assert results == [f"images:{i}" for i in range(8)]
    assert [len(p) for _, p in calls] == [4, 4]


def test_batch_of_one_when_batching_is_off_and_kinds_are_not_mixed():
    async def go(b):
        return await asyncio.gather(b.submit("images", 1, 1, 10), b.submit("tensor", 2, 1, 10),
                                    b.submit("images", 3, 1, 10))

    results, calls = run_with(dict(max_batch=8, max_wait_ms=50, max_queue=64), go)
    assert results == ["images:1", "tensor:2", "images:3"]
    assert [k for k, _ in calls] == ["images", "tensor", "images"]

    results, calls = run_with(dict(max_batch=1, max_wait_ms=50, max_queue=64),
                              lambda b: asyncio.gather(*(b.submit("images", i, 1, 10) for i in range(3))))
    assert [len(p) for _, p in calls] == [1, 1, 1]


def test_a_lone_request_runs_at_once_and_waits_only_for_arrivals():
    # Checked by cause, not by a stopwatch: with max_wait half a minute long, a request that is held back for it cannot
    # be answered inside the 5 s the test gives it, however busy the machine; one that is not held back always is.
    long_wait = dict(max_batch=8, max_wait_ms=30_000, max_queue=64)

    async def alone(b):
        return await asyncio.wait_for(b.submit("images", 0, 1, 120), 5)

    try:
        result, calls = run_with(long_wait, alone)
    except asyncio.TimeoutError:
        pytest.fail("a request with nothing else arriving was held back for max_wait")
    assert result == "images:0" and calls == [("images", [0])]

    async def with_arrival(b):
        arrival = b.arrival().__enter__()  # another request is being decoded and never comes (it failed)
        job = asyncio.ensure_future(b.submit("images", 0, 1, 120))
        for _ in range(20):  # the worker runs whenever it can; it must keep waiting while the arrival is on its way
            await asyncio.sleep(0.005)
        held = job.done()
        arrival.done()  # gone: the wait ends now, not after the half minute
        try:
            return held, await asyncio.wait_for(job, 5)
        except asyncio.TimeoutError:
            pytest.fail("still waiting after the arrival it waited for was gone")

    (held, result), calls = run_with(long_wait, with_arrival)
    assert not held, "did not wait while another request was arriving"
    assert result == "images:0" and calls == [("images", [0])]

    async def never_arrives(b):
        arrival = b.arrival().__enter__()  # never done: max_wait alone ends the wait
        t = time.perf_counter()
        try:
            result = await asyncio.wait_for(b.submit("images", 0, 1, 120), 10)
        except asyncio.TimeoutError:
            arrival.done()  # lets the batcher drain and stop
            pytest.fail("waited past max_wait (0.3 s) for an arrival that never came")
        waited = time.perf_counter() - t
        arrival.done()
        return result, waited

    (result, waited), _ = run_with(dict(max_batch=8, max_wait_ms=300, max_queue=64), never_arrives)
    assert result == "images:0" and waited >= 0.29, waited  # a lower bound: a busy machine only adds to it

    async def joined(b):
        with b.arrival() as arrival:
            first = asyncio.ensure_future(b.submit("images", 0, 1, 10))
            await asyncio.sleep(0.05)
            second = await b.submit("images", 1, 1, 10, arrival)
        return [await first, second]

    results, calls = run_with(long_wait, joined)
    assert results == ["images:0", "images:1"] and [len(p) for _, p in calls] == [2]


def test_full_queue_refuses_and_deadline_gives_up():
    async def go(b):
        first = asyncio.ensure_future(b.submit("images", 0, 1, 10))  # runs for 0.3 s
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(b.submit("images", i, 1, 10)) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await b.submit("images", 3, 1, 10)
        b.max_queue = 3  # room for one more, which gives up before its turn
        with pytest.raises(asyncio.TimeoutError):
            await b.submit("tensor", 4, 1, 0.01)
        return await asyncio.gather(first, *queued)

    results, calls = run_with(dict(max_batch=1, max_wait_ms=0, max_queue=2), go, delay=0.3)
    assert results == ["images:0", "images:1", "images:2"]
    assert all(p != [4] for _, p in calls), "the request that gave up was still run"


def test_http_answers_503_with_retry_after_and_504(tmp_path):
    from starlette.testclient import TestClient

    import googlenet
    from googlenet.serve.app import ServeConfig, create_app
    from googlenet.serve.model import ServedModel
    from tests.serving import make_weights

    model = googlenet.load_model(make_weights(tmp_path / "w.safetensors"))
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (80, 70), (200, 30, 30)).save(image)
    app = create_app(ServedModel(model, name="googlenet"), ServeConfig(max_queue=1))
    with TestClient(app) as client:
        assert client.post("/v1/classify", content=image.read_bytes()).status_code == 200
        app.state.batcher.max_queue = 0
        r = client.post("/v1/classify", content=image.read_bytes())
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "queue is full" in r.json()["error"]
    app = create_app(ServedModel(model, name="googlenet"), ServeConfig(timeout_s=1e-6))
    with TestClient(app) as client:
        r = client.post("/v1/classify", content=image.read_bytes())
        assert r.status_code == 504 and "deadline" in r.json()["error"]
        assert 'googlenet_errors_total{kind="deadline"} 1.0' in client.get("/metrics").text
