"""``googlenet bench serve``: the HTTP server under load, beside the in-process predictor it wraps.

The load comes from ``hey`` (Debian's package, a Go client: a Python client would eat the cores it measures),
against 127.0.0.1 only, bounded in requests and time. For each batching mode (on: ``--max-batch``; off: batches of
one) a fresh server runs every concurrency level; per level: requests/s, p50/p90/p99 latency, the batch-size
histogram (from the server's /metrics) and the 503 count. The in-process predictor's images/s at batch 1 and at
``--max-batch`` are measured in the same run: what HTTP, decoding and queueing cost is read against them.

The abuse run repeats the highest concurrency level of the batching server while a second client sends hostile
requests (empty, 100 MB, bomb, truncated, text, bad JSON, bad shape, bad datatype, a header flood, a slow body),
each followed by a good request whose answer is checked, and reads the server's RSS before and after.
"""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from ..errors import UserError
from .common import proc_status_kib


def _rss_mib(pid: int) -> float:
    kib = proc_status_kib("VmRSS", pid)
    return float("nan") if kib is None else kib / 1024


class _Server:
    def __init__(self, weights: str, flags: list[str]) -> None:
        import httpx

        with socket.socket() as s:  # a free port
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "googlenet", "serve", "--weights", weights, "--port",
                                      str(self.port), *flags], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise UserError(f"the server did not start: {self.proc.stderr.read().decode()[-300:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/v2/health/ready", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise UserError("the server was not ready within 180 s")
            time.sleep(0.2)

    def batch_histogram(self) -> dict[str, float]:
        import httpx

        lines = httpx.get(self.url + "/metrics", timeout=10).text.splitlines()
        return {line.split('le="')[1].split('"')[0]: float(line.split()[-1]) for line in lines
                if line.startswith("googlenet_batch_size_bucket")}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.stderr.close()
        return self.proc.wait()


def _histogram_delta(before: dict, after: dict) -> dict[str, int]:
    """Cumulative Prometheus buckets before/after -> batches per size range, e.g. {"1": 40, "2-4": 12}."""
    out, previous_cum, low = {}, 0.0, 1
    for key in sorted((k for k in after if k != "+Inf"), key=float):
        edge = float(key)
        cum = after.get(key, 0.0) - before.get(key, 0.0)
        count = int(cum - previous_cum)
        if count:
            out[str(int(edge)) if low == int(edge) else f"{low}-{int(edge)}"] = count
        previous_cum, low = cum, int(edge) + 1
    return out


def _hey(url: str, body: Path, requests: int, concurrency: int, timeout_s: int) -> dict:
    cmd = ["hey", "-n", str(requests), "-c", str(concurrency), "-m", "POST", "-D", str(body),
           "-T", "application/octet-stream", "-t", "30", "-o", "csv", url + "/v1/classify"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    if not rows:
        raise UserError(f"hey returned no results: {run.stderr.strip()[-300:]}")
    ok = [r for r in rows if r["status-code"] == "200"]
    latencies = sorted(float(r["response-time"]) * 1000 for r in ok)
    start = min(float(r["offset"]) for r in rows)
    end = max(float(r["offset"]) + float(r["response-time"]) for r in rows)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(round(p / 100 * (len(latencies) - 1))))] if latencies else 0.0

    rejected = sum(r["status-code"] == "503" for r in rows)
    return {"requests": len(rows), "ok": len(ok), "rejected_503": rejected,
            "other_errors": len(rows) - len(ok) - rejected,
            "requests_per_s": len(ok) / (end - start), "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99)}


def _in_process(weights: str, body: Path, max_batch: int, precision: str, backend: str, seconds: float) -> dict:
    """The predictor the server wraps, called directly: images/s at batch 1 and at max_batch (decode excluded)."""
    from ..serve.model import ServedModel
    from ..pretrained import load_weights_arg

    served = ServedModel(load_weights_arg(weights), name="bench", precision=precision, backend=backend)
    prepared = served.prepare(body.read_bytes())
    out = {}
    for batch in sorted({1, max_batch}):
        items = [prepared] * batch
        served.probs_for_images(items)  # warm-up
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            served.probs_for_images(items)
            n += batch
        out[batch] = n / (time.perf_counter() - started)
    return out


def _hostile_requests(body: Path) -> list[tuple[str, Callable]]:
    """(name, send(url) -> status) for each hostile request kind; each must get its 4xx."""
    import httpx

    good = body.read_bytes()

    def post(content: bytes, route: str = "/v1/classify"):
        return lambda url: httpx.post(url + route, content=content, timeout=15).status_code

    def infer(payload):
        return lambda url: httpx.post(url + "/v2/models/googlenet/infer", json=payload, timeout=15).status_code

    def raw(data: bytes, wait: float = 15.0):
        def send(url):
            host, port = url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=wait) as s:
                s.sendall(data)
                reply = s.recv(4096)
            return int(reply.split(b" ")[1]) if reply.startswith(b"HTTP/") else 0
        return send

    return [
        ("empty body", post(b"")),
        ("100 MB body", post(b"\xff\xd8\xff" + b"\0" * (100 * 1024 * 1024))),
        ("bomb PNG", post(_png_bomb(20000))),
        ("truncated JPEG", post(good[: max(16, len(good) // 3)] if good[:3] == b"\xff\xd8\xff" else _truncated_jpeg())),
        ("text file", post(b"hello, this is not an image\n" * 20)),
        ("wrong JSON", post(b"{oops", "/v2/models/googlenet/infer")),
        ("wrong tensor shape", infer({"inputs": [{"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32",
                                                  "data": [0.0] * 192}]})),
        ("wrong datatype", infer({"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [1.0]}]})),
        ("10,000 headers", raw(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n"
                               + b"".join(b"X-H%d: v\r\n" % i for i in range(10_000)) + b"\r\n")),
        ("slow body", raw(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n\xff\xd8\xff")),
    ]


def _truncated_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (300, 300), (20, 200, 40)).save(buf, "JPEG")
    return buf.getvalue()[:500]


def _png_bomb(side: int) -> bytes:
    """A side x side grayscale PNG of zeros, a few hundred KB, compressed in row blocks (the raster is never whole in
    memory)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    parts = [comp.compress(row * 256) for _ in range(side // 256)] + [comp.compress(row * (side % 256)), comp.flush()]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


def bench_serve(*, weights: str, image: Optional[str], concurrency: list[int], requests: int, max_batch: int,
                max_wait_ms: float, precision: str, backend: str, abuse: int, progress: Callable[[str], None],
                timeout_s: int = 300) -> tuple[list[dict], list[str], dict]:
    if shutil.which("hey") is None:
        raise UserError("bench serve needs 'hey' (Debian: apt-get install hey)")
    import httpx

    with tempfile.TemporaryDirectory(prefix="googlenet-bench-serve-") as tmp:
        body = Path(image) if image else _held_out_png(Path(tmp))
        progress("in-process predictor")
        inproc = _in_process(weights, body, max_batch, precision, backend, seconds=5.0)
        flags = ["--precision", precision, "--backend", backend, "--max-queue", "256", "--read-timeout-s", "2",
                 "--max-wait-ms", str(max_wait_ms)]
        rows, abuse_result = [], {}
        for mode, batch in (("on", max_batch), ("off", 1)):
            server = _Server(weights, flags + ["--max-batch", str(batch)])
            try:
                expected = httpx.post(server.url + "/v1/classify", content=body.read_bytes(),
                                      timeout=30).json()["topk"][0]["label"]
                _hey(server.url, body, max(concurrency), max(concurrency), timeout_s)  # warm-up
                levels = [(c, False) for c in concurrency]
                if mode == "on" and abuse > 0:
                    levels.append((max(concurrency), True))  # the top level again, with the abuse beside it
                for c, abused in levels:
                    progress(f"batching {mode}, concurrency {c}" + (", with abuse" if abused else ""))
                    before = server.batch_histogram()
                    rss_before = _rss_mib(server.proc.pid)
                    if abused:
                        abuser = threading.Thread(target=_abuse, args=(server.url, body, abuse, expected, abuse_result))
                        abuser.start()
                    result = _hey(server.url, body, requests, c, timeout_s)
                    if abused:
                        abuser.join()
                        time.sleep(1.0)  # settle: compare memory at the same (idle) state as before
                        abuse_result.update(rss_before_mib=rss_before, rss_after_mib=_rss_mib(server.proc.pid),
                                            server_alive=server.proc.poll() is None)
                    result.update(batching=mode + (" + abuse" if abused else ""), concurrency=c, max_batch=batch,
                                  batches=_histogram_delta(before, server.batch_histogram()))
                    rows.append(result)
            finally:
                exit_code = server.stop()
                if mode == "on" and abuse_result:
                    abuse_result["exit_code_after_sigterm"] = exit_code
    best = max(inproc.values())
    for r in rows:
        r["of_in_process_best"] = r["requests_per_s"] / best
    notes = [f"in-process predictor: {inproc[1]:.1f} img/s at batch 1, {inproc[max_batch]:.1f} img/s at batch "
             f"{max_batch} ({precision}, {backend})"]
    return rows, notes, {"in_process_images_per_s": {str(k): v for k, v in inproc.items()}, "abuse": abuse_result}


def _held_out_png(workdir: Path) -> Path:
    from PIL import Image

    from ..data.embedded import load_fashion

    path = workdir / "held_out.png"
    Image.fromarray(load_fashion()[1].images[0].numpy()).save(path)
    return path


def _abuse(url: str, body: Path, count: int, expected: str, out: dict) -> None:
    """``count`` hostile requests cycling through the kinds, plus a good request checked after each."""
    import httpx

    kinds = _hostile_requests(body)
    results, good_wrong = [], 0
    for i in range(count):
        name, send = kinds[i % len(kinds)]
        started = time.perf_counter()
        try:
            status = send(url)
        except Exception as e:  # a reset connection is not a 4xx: count it as a failure
            status = f"{type(e).__name__}"
        results.append({"kind": name, "status": status, "seconds": time.perf_counter() - started})
        r = httpx.post(url + "/v1/classify", content=body.read_bytes(), timeout=30)
        good_wrong += r.status_code != 200 or r.json()["topk"][0]["label"] != expected
    by_kind: dict[str, list] = {}  # in the order first sent
    for r in results:
        by_kind.setdefault(r["kind"], []).append(r)
    out.update(hostile=len(results),
               all_4xx=all(isinstance(r["status"], int) and 400 <= r["status"] < 500 for r in results),
               statuses={k: sorted({str(r["status"]) for r in v}) for k, v in by_kind.items()},
               max_seconds_except_slow_body=max((r["seconds"] for r in results if r["kind"] != "slow body"),
                                                default=0.0),
               slow_body_seconds=max((r["seconds"] for r in by_kind.get("slow body", [])), default=0.0),
               good_requests_checked=count, good_requests_wrong=good_wrong)


def format_rows(rows: list[dict]) -> str:
    head = (f"{'batching':>16} {'conc':>4} {'req/s':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'503':>4} "
            f"{'of best':>7}  batches")
    return "\n".join([head] + [f"{r['batching']:>16} {r['concurrency']:>4} {r['requests_per_s']:7.1f} "
                               f"{r['p50_ms']:8.1f} {r['p90_ms']:8.1f} {r['p99_ms']:8.1f} {r['rejected_503']:>4} "
                               f"{r['of_in_process_best']:7.2f}  {r['batches']}" for r in rows])
