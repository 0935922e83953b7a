"""googlenet serve: the Open Inference Protocol v2 as Triton's and KServe's clients speak it, /v1/classify equal to
``googlenet predict``, dynamic batching, metrics, and every kind of bad request answered with its 4xx JSON error."""

from __future__ import annotations

import base64
import io
import json
import re
import signal
import socket
import struct
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from googlenet.cli import main
from tests.hostile import png_bomb
from tests.serving import CLASSES, PRE, make_weights, server
from tests.system_packages import missing

pytestmark = pytest.mark.slow  # each module starts a server process


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_weights(tmp_path_factory.mktemp("serve") / "w.safetensors")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i, (size, fmt) in enumerate([((90, 70), "JPEG"), ((64, 120), "PNG"), ((200, 150), "WEBP"),
                                     ((33, 47), "BMP")]):
        arr = (rng.random((size[1], size[0], 3)) * 255).astype("uint8")
        path = folder / f"img{i}.{fmt.lower()}"
        Image.fromarray(arr).save(path, fmt)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def running_server(weights):
    with server(weights, "--max-wait-ms", "50", "--max-body-mb", "1", "--read-timeout-s", "1",
                "--body-timeout-s", "3") as (url, proc):
        yield url, proc


@pytest.fixture(scope="module")
def running(running_server):
    return running_server[0]


def predict_json(weights, paths, capsys):
    capsys.readouterr()
    assert main(["predict", *map(str, paths), "--weights", str(weights), "--json", "--topk", str(len(CLASSES))]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return {p["image"]: {t["index"]: t["prob"] for t in p["topk"]} for p in out["predictions"]}


def test_health_and_metadata(running):
    assert httpx.get(running + "/v2/health/live").json() == {"live": True}
    assert httpx.get(running + "/v2/health/ready").json() == {"ready": True}
    server_meta = httpx.get(running + "/v2").json()
    assert server_meta["name"] == "googlenet" and "classification" in server_meta["extensions"]
    meta = httpx.get(running + "/v2/models/googlenet").json()
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]},
                              {"name": "input", "datatype": "FP32", "shape": [-1, 3, 64, 64]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(CLASSES)]}]
    assert meta["parameters"]["num_classes"] == len(CLASSES)
    assert httpx.get(running + "/v2/models/googlenet/versions/1").json()["name"] == "googlenet"
    assert httpx.get(running + "/v2/models/googlenet/ready").json() == {"name": "googlenet", "ready": True}
    missing = httpx.get(running + "/v2/models/resnet/ready")
    assert missing.status_code == 404 and "unknown model" in missing.json()["error"]
    assert httpx.get(running + "/v2/models/googlenet/versions/7").status_code == 404


def test_classify_equals_predict(running, weights, images, capsys):
    expected = predict_json(weights, images, capsys)
    for path in images:
        r = httpx.post(running + f"/v1/classify?topk={len(CLASSES)}", content=path.read_bytes())
        assert r.status_code == 200, r.text
        body = r.json()
        got = {t["index"]: t["prob"] for t in body["topk"]}
        want = expected[str(path)]
        assert got.keys() == want.keys()
        assert max(abs(got[k] - want[k]) for k in got) < 1e-5
        assert [t["label"] for t in body["topk"]] == [CLASSES[t["index"]] for t in body["topk"]]
        assert set(body["timing_ms"]) == {"decode", "queue_and_infer", "total"}
        assert len(body["crops"]) == 1 and body["crops"][0]["size"] == 64
    assert len(httpx.post(running + "/v1/classify?topk=3", content=images[0].read_bytes()).json()["topk"]) == 3


def test_v2_infer_json_base64_and_classification(running, weights, images, capsys):
    expected = predict_json(weights, images[:2], capsys)
    payload = {"id": "req-1", "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                                          "data": [base64.b64encode(p.read_bytes()).decode() for p in images[:2]]}]}
    r = httpx.post(running + "/v2/models/googlenet/infer", json=payload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "req-1" and body["model_name"] == "googlenet"
    out = body["outputs"][0]
    assert out["name"] == "probabilities" and out["datatype"] == "FP32" and out["shape"] == [2, len(CLASSES)]
    probs = np.array(out["data"]).reshape(2, -1)
    for row, path in zip(probs, images[:2]):
        want = expected[str(path)]
        assert max(abs(row[k] - v) for k, v in want.items()) < 1e-5
    payload["outputs"] = [{"name": "probabilities", "parameters": {"classification": 2}}]
    out = httpx.post(running + "/v2/models/googlenet/infer", json=payload).json()["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [2, 2]
    value, index, label = out["data"][0].split(":", 2)
    assert int(index) == int(probs[0].argmax()) and label == CLASSES[int(index)]
    assert abs(float(value) - probs[0].max()) < 1e-5


def test_tritonclient_binary_bytes_and_fp32(running, weights, images, capsys):
    tritonhttp = pytest.importorskip("tritonclient.http")
    expected = predict_json(weights, images[:1], capsys)[str(images[0])]
    client = tritonhttp.InferenceServerClient(running.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("googlenet")
    inp = tritonhttp.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([images[0].read_bytes()], dtype=np.object_), binary_data=True)
    result = client.infer("googlenet", [inp], outputs=[tritonhttp.InferRequestedOutput("probabilities")])
    probs = result.as_numpy("probabilities")
    assert probs.shape == (1, len(CLASSES))
    assert max(abs(float(probs[0, k]) - v) for k, v in expected.items()) < 1e-5
    # A preprocessed tensor, as bytes after the JSON header: equal to the model run here on the same tensor.
    x = torch.randn(2, 3, 64, 64)
    inp = tritonhttp.InferInput("input", [2, 3, 64, 64], "FP32")
    inp.set_data_from_numpy(x.numpy(), binary_data=True)
    got = client.infer("googlenet", [inp]).as_numpy("probabilities")
    import googlenet

    model = googlenet.load_model(str(weights)).eval()
    with torch.no_grad():
        want = torch.softmax(model(x), dim=1).numpy()
    assert np.abs(got - want).max() < 1e-5
    top = client.infer("googlenet", [inp], outputs=[tritonhttp.InferRequestedOutput(
        "probabilities", binary_data=False, class_count=3)]).as_numpy("probabilities")
    assert top.shape == (2, 3) and int(str(top[0, 0]).split(":")[1]) == int(want[0].argmax())


def _bad(url, status, fragment, **kw):
    r = httpx.post(url, timeout=10, **kw)
    assert r.status_code == status, (r.status_code, r.text)
    assert fragment in r.json()["error"]


def test_bad_requests_get_their_4xx(running, tmp_path, images):
    classify, infer = running + "/v1/classify", running + "/v2/models/googlenet/infer"
    _bad(classify, 400, "empty body", content=b"")
    _bad(classify, 415, "not an accepted image", content=b"just some text\n" * 10)
    _bad(classify, 415, "not an accepted image", content=b"%PDF-1.4 pretending", headers={"Content-Type": "image/png"})
    jpeg = io.BytesIO()
    Image.new("RGB", (300, 300), (10, 200, 30)).save(jpeg, "JPEG")
    _bad(classify, 400, "bad JPEG image", content=jpeg.getvalue()[:400])
    _bad(classify, 413, "too large", content=png_bomb(tmp_path / "bomb.png", side=20000).read_bytes())
    _bad(classify, 413, "over the limit", content=b"\xff\xd8\xff" + b"\0" * (2 * 1024 * 1024))

    def chunks():  # no Content-Length: the limit is enforced on the streamed bytes
        for _ in range(40):
            yield b"\x89PNG\r\n\x1a\n" + b"\0" * 65536
    _bad(classify, 413, "over the limit", content=chunks())
    # Python's urllib sends the whole body before it reads the answer: it sees the 413 (not a reset connection)
    # because the server reads and discards a bounded amount past the limit before answering.
    import urllib.error
    import urllib.request

    for body in (b"\xff\xd8\xff" + b"\0" * (12 * 1024 * 1024), b"\0" * (1024 * 1024 + 1)):
        request = urllib.request.Request(classify, data=body, headers={"Content-Type": "image/jpeg"})
        with pytest.raises(urllib.error.HTTPError) as seen:
            urllib.request.urlopen(request, timeout=30)
        assert seen.value.code == 413 and "over the limit" in json.loads(seen.value.read())["error"]
    _bad(classify, 400, "topk", params={"topk": "-3"}, content=images[0].read_bytes())
    _bad(infer, 400, "not valid JSON", content=b"{not json")
    _bad(infer, 400, "exactly one input", json={"inputs": []})
    _bad(infer, 400, "must have shape [N, 3, 64, 64]",
         json={"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}]})
    _bad(infer, 400, "datatype FP32",
         json={"inputs": [{"name": "input", "shape": [1, 3, 64, 64], "datatype": "INT64", "data": [0] * 12288}]})
    _bad(infer, 400, "values for shape",
         json={"inputs": [{"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": [0.0] * 10}]})
    _bad(infer, 400, "not valid base64",
         json={"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["***"]}]})
    _bad(infer, 400, "shape [2] but 1 image",
         json={"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["aGk="]}]})
    _bad(infer, 400, "unknown output", json={"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                                        "data": ["aGk="]}], "outputs": [{"name": "logits"}]})
    _bad(infer, 415, "not an accepted image",
         json={"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGVsbG8="]}]})
    _bad(infer, 400, "Inference-Header-Content-Length", content=b"{}", headers={"Inference-Header-Content-Length": "99"})
    _bad(infer, 400, "nested too deeply", content=b"[" * 100_000)
    tensor = {"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32"}
    _bad(infer, 400, "must be numbers", content=b'{"inputs": [{"name": "input", "shape": [1, 3, 64, 64], '
                                                 b'"datatype": "FP32", "data": [' + b"7" * 400 + b", 0" * 12287 + b"]}]}")
    _bad(infer, 400, "must be numbers", json={"inputs": [{**tensor, "data": ["1.5"] * 12288}]})
    _bad(infer, 400, "must be numbers", json={"inputs": [{**tensor, "data": [True] * 12288}]})
    _bad(infer, 400, "12288 expected", json={"inputs": [{**tensor, "data": [[]] * 100_000}]})
    _bad(classify, 400, "topk", params={"topk": "\u00b2"}, content=images[0].read_bytes())
    _bad(classify, 400, "topk", params={"topk": "9" * 5000}, content=images[0].read_bytes())
    strip = io.BytesIO()
    Image.new("L", (16000, 1), 128).save(strip, "PNG")  # 16k pixels that the eval view would blow up to 85M
    _bad(classify, 400, "aspect ratio too extreme", content=strip.getvalue())
    assert httpx.get(running + "/v1/classify").status_code == 405
    r = httpx.get(running + "/no/such/route")
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}
    # The server is still well after all of that.
    assert httpx.post(classify, content=images[0].read_bytes()).status_code == 200


def _raw(url: str, data: bytes, wait_s: float = 10.0) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as s:
        s.sendall(data)
        reply = b""
        # Headers and body may come in separate segments: read until the body named by Content-Length is in.
        while chunk := s.recv(65536):
            reply += chunk
            head, sep, body = reply.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if sep and (length is None or len(body) >= int(length.group(1))):
                break
        return reply


def test_slow_body_and_header_flood(running):
    started = time.monotonic()
    reply = _raw(running, b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n\xff\xd8\xff")
    assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in reply
    assert time.monotonic() - started < 5
    flood = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))
    reply = _raw(running, flood + b"\r\n")
    assert reply.split(b" ")[1].startswith(b"4"), reply[:100]
    assert httpx.get(running + "/v2/health/live").status_code == 200


def test_trickled_body_and_hang_up(running):
    host, port = running.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        reply = b""
        for _ in range(20):  # a byte every 0.5 s: each within --read-timeout-s 1, the whole not in --body-timeout-s 3
            try:
                s.sendall(b"\xff")
            except OSError:
                break
            s.settimeout(0.5)
            try:
                reply += s.recv(65536)
            except socket.timeout:
                continue
            if reply:
                break
        # The headers and the JSON body may come in separate segments: read until the body is whole.
        s.settimeout(2)
        while b"\r\n\r\n" in reply:
            head, body = reply.split(b"\r\n\r\n", 1)
            length = next((int(ln.split(b":", 1)[1]) for ln in head.lower().split(b"\r\n")
                           if ln.startswith(b"content-length:")), 0)
            if len(body) >= length:
                break
            try:
                more = s.recv(65536)
            except (socket.timeout, OSError):
                break
            if not more:
                break
            reply += more
    assert reply.startswith(b"HTTP/1.1 408") and b"whole body did not arrive within 3 s" in reply, reply[:200]
    assert time.monotonic() - started < 6
    with socket.create_connection((host, int(port)), timeout=10) as s:  # hangs up mid-body
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n\xff\xd8\xff\x00\x00")
    time.sleep(0.5)
    assert httpx.get(running + "/v2/health/live").status_code == 200


def test_no_cors_by_default(running):
    r = httpx.get(running + "/v2/health/live", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_page_is_self_contained(running):
    r = httpx.get(running + "/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    assert "<script src" not in r.text and "http://" not in r.text and "https://" not in r.text


def test_concurrent_requests_are_batched_and_counted(running, images):
    data = images[0].read_bytes()
    results = []

    def one():
        results.append(httpx.post(running + "/v1/classify", content=data, timeout=30).json()["topk"][0])

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len({r["index"] for r in results}) == 1
    metrics = httpx.get(running + "/metrics").text
    count = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("googlenet_batch_size_count")))
    bigger = float(next(line.split()[-1] for line in metrics.splitlines()
                        if line.startswith('googlenet_batch_size_bucket{le="1.0"}')))
    assert count > bigger, "no batch held more than one image"  # some batch gathered several requests
    assert 'googlenet_requests_total{code="200",route="classify"}' in metrics
    assert "googlenet_queue_depth 0.0" in metrics
    assert "googlenet_request_seconds_bucket" in metrics


def test_abuse_left_no_traceback_in_the_log(running_server):
    """After every hostile request above (this test runs after them: pytest keeps file order), the server's log
    holds no traceback, and it exits 0 on SIGTERM."""
    url, proc = running_server
    assert httpx.get(url + "/v2/health/live").status_code == 200
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    log = proc.stderr.read().decode(errors="replace")
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]


def test_sigterm_drains_in_flight_requests(weights, images):
    data = images[0].read_bytes()
    with server(weights) as (url, proc):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(data) + data[:100])
            time.sleep(0.5)  # the request is in flight, its body half sent
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            s.sendall(data[100:])
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert len(json.loads(reply.split(b"\r\n\r\n", 1)[1])["topk"]) == 5
        assert proc.wait(timeout=30) == 0
        with pytest.raises(httpx.HTTPError):
            httpx.get(url + "/v2/health/live", timeout=2)


def test_cors_only_for_the_named_origin(weights):
    with server(weights, "--cors-origin", "http://app.example") as (url, _):
        ok = httpx.get(url + "/v2/health/live", headers={"Origin": "http://app.example"})
        assert ok.headers["access-control-allow-origin"] == "http://app.example"
        other = httpx.get(url + "/v2/health/live", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_bench_serve_reports_load_and_abuse(weights, images, capsys):
    import shutil

    if shutil.which("hey") is None:
        missing("Debian's hey is not installed", "hey")
    code = main(["bench", "serve", "--weights", str(weights), "--image", str(images[0]), "--requests", "24",
                 "--concurrency", "1", "4", "--abuse", "10", "--backend", "eager", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    modes = [(r["batching"], r["concurrency"]) for r in out["results"]]
    assert modes == [("on", 1), ("on", 4), ("on + abuse", 4), ("off", 1), ("off", 4)]
    assert all(r["ok"] == r["requests"] == 24 and r["requests_per_s"] > 0 for r in out["results"])
    assert all(k in ("1", "2", "3-4", "5-8") for r in out["results"] for k in r["batches"])
    abuse = out["abuse"]
    assert abuse["hostile"] == 10 and abuse["all_4xx"] and abuse["good_requests_wrong"] == 0
    assert abuse["server_alive"] and abuse["exit_code_after_sigterm"] == 0
    assert abuse["rss_after_mib"] < 1.1 * abuse["rss_before_mib"]
    assert set(out["in_process_images_per_s"]) == {"1", "8"}


def test_serve_flag_errors_are_one_line(weights, tmp_path, capsys):
    assert main(["serve", "--weights", str(tmp_path / "missing.safetensors")]) == 2
    assert main(["serve", "--weights", str(weights), "--precision", "int8", "--backend", "eager"]) == 2
    assert main(["serve", "--weights", str(weights), "--name", "../etc"]) == 2
    assert main(["serve", "--weights", str(weights), "--port", "70000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("googlenet serve: error: ") for line in err)
