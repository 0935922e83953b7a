"""Shard sets read from elsewhere, as WebDataset reads them: ``http://`` (curl, here from a local HTTP server) and
``pipe:`` command templates. Training from the URL is bit-identical to training from the folder; evaluation stages
the held-out shards into the cache (checked against the index's sizes and SHA-256) and scores what the folder
scores; what a server or an index can do wrong ends in one line and exit 2."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import shutil
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from googlenet.cli import main
from tests.system_packages import missing

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote") / "images"
    rng = np.random.default_rng(3)
    for split, n in (("train", 24), ("val", 7)):  # 14 held-out images
        for c, name in enumerate(("dark", "light")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                pixels = (rng.integers(0, 100, (36 + i % 5, 44, 3)) + 150 * c).astype(np.uint8)
                Image.fromarray(pixels).save(d / f"{i:02d}.{'jpg' if i % 2 else 'png'}")
    out = root.parent / "shards"
    assert main(["shards", "--data", str(root), "--out", str(out), "--shard-size", "30KB"]) == 0
    return out


class Server:
    """A static HTTP server over a folder, on a free port of 127.0.0.1; counts its GET requests by path."""

    def __init__(self, folder: Path) -> None:
        self.gets: dict[str, int] = {}
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.gets[self.path] = server.gets.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *args):
                pass

        class Quiet(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that hangs up early (the reader stopping at a bound) is not the test's failure

        self.httpd = Quiet(("127.0.0.1", 0), functools.partial(Handler, directory=folder))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(shard_set, tmp_path, monkeypatch):
    if shutil.which("curl") is None:
        missing("curl is not installed (webdataset fetches http shards with it)", "curl")
    monkeypatch.setenv("GOOGLENET_SHARD_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "www" / "shards"
    shutil.copytree(shard_set, copy)
    server = Server(copy.parent)
    yield server, copy
    server.close()


def run(argv: list, capsys) -> tuple[int, dict | None, str]:
    capsys.readouterr()
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    return code, json.loads(lines[-1]) if code == 0 and lines else None, err


TRAIN = ["train", "--arch", "googlenet_bn", "--input-size", "64", "--batch-size", "8", "--epochs", "1",
         "--precision", "fp32", "--seed", "4", "--workers", "2"]


def test_training_from_an_http_url_is_the_training_from_the_folder(shard_set, served, tmp_path, capsys):
    server, _ = served
    code, local, err = run([*TRAIN, "--data", str(shard_set), "--out", str(tmp_path / "local")], capsys)
    assert code == 0, err
    code, remote, err = run([*TRAIN, "--data", f"{server.url}/shards/", "--out", str(tmp_path / "url")], capsys)
    assert code == 0, err
    assert remote["train_images_per_epoch"] == local["train_images_per_epoch"] == 48
    assert remote["eval_images"] == local["eval_images"] == 14
    a, b = (load_file(str(tmp_path / n / "weights.safetensors")) for n in ("local", "url"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    train_gets = sum(n for path, n in server.gets.items() if path.startswith("/shards/train/"))
    assert server.gets["/shards/index.json"] == 1 and train_gets >= 1  # the stream came over HTTP
    index = json.loads((shard_set / "index.json").read_text())
    for entry in index["splits"]["val"]["shards"]:  # the held-out shards were staged, once, verified
        assert server.gets[f"/shards/{entry['file']}"] == 1
        staged = next((tmp_path / "cache").glob(f"*/{entry['file']}"))
        assert hashlib.sha256(staged.read_bytes()).hexdigest() == entry["sha256"]


def test_eval_through_a_pipe_template_scores_what_the_folder_scores(shard_set, served, tmp_path, capsys):
    _, copy = served
    code, _, err = run([*TRAIN, "--data", str(shard_set), "--out", str(tmp_path / "run")], capsys)
    assert code == 0, err
    weights = ["--weights", str(tmp_path / "run" / "weights.safetensors")]
    code, local, err = run(["eval", "--data", str(shard_set), *weights], capsys)
    assert code == 0, err
    code, piped, err = run(["eval", "--data", f"pipe:cat {copy}/{{}}", *weights], capsys)
    assert code == 0, err
    assert piped["images"] == local["images"] == 14
    assert (piped["correct1"], piped["correct5"]) == (local["correct1"], local["correct5"])
    staged = sorted(p.name for p in (tmp_path / "cache").rglob("*.tar"))
    assert len(staged) == len(json.loads((shard_set / "index.json").read_text())["splits"]["val"]["shards"])
    code, again, err = run(["eval", "--data", f"pipe:false {{}}", *weights], capsys)  # noqa: F541
    assert code == 2 and "could not read" in err and err.count("\n") == 1, err


def one_line_error(argv: list, capsys, message: str) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_what_a_server_or_an_index_gets_wrong_is_one_line(shard_set, served, tmp_path, capsys):
    server, copy = served
    out = ["--out", str(tmp_path / "o")]
    # Nothing listening: curl's "connection refused".
    one_line_error([*TRAIN, "--data", "http://127.0.0.1:9/shards", *out], capsys,
                   "could not read http://127.0.0.1:9/shards/index.json: exit status 7")
    one_line_error([*TRAIN, "--data", f"{server.url}/nothing-here", *out], capsys, "exit status 22")
    one_line_error([*TRAIN, "--data", "pipe:cat /no/such/dir/index.json", *out], capsys, "names its files with {}")
    index = json.loads((copy / "index.json").read_text())
    # A file name made to run a command when put into the pipe template: refused before any command runs.
    marker = tmp_path / "ran"
    evil = json.loads(json.dumps(index))
    evil["splits"]["train"]["shards"][0]["file"] = f"x;touch {marker}"
    (copy / "index.json").write_text(json.dumps(evil))
    one_line_error([*TRAIN, "--data", f"pipe:cat {copy}/{{}}", *out], capsys, "that is not a plain relative name")
    assert not marker.exists()
    # A held-out shard longer than its index says: the transfer is stopped at the declared size.
    grown = json.loads(json.dumps(index))
    val = grown["splits"]["val"]["shards"][0]
    (copy / val["file"]).write_bytes((copy / val["file"]).read_bytes() + b"\0" * 5000)
    (copy / "index.json").write_text(json.dumps(grown))
    one_line_error([*TRAIN, "--data", f"{server.url}/shards", *out], capsys, "more than it may hold")
    # The same length but other bytes: the SHA-256 refuses it, and nothing is left in the cache.
    data = bytearray((copy / val["file"]).read_bytes()[:val["bytes"]])
    data[600] ^= 0xFF
    (copy / val["file"]).write_bytes(bytes(data))
    one_line_error([*TRAIN, "--data", f"{server.url}/shards", *out], capsys, "another SHA-256")
    assert not list((tmp_path / "cache").rglob("*.tar"))
    (copy / "index.json").write_text(json.dumps(index))
    shutil.copy(shard_set / val["file"], copy / val["file"])

    def training_fails(*why: str) -> None:  # the loader worker's failure reaches the user as one line
        code, _, err = run([*TRAIN, "--data", f"{server.url}/shards", *out], capsys)
        last = err.strip().splitlines()[-1]
        assert code == 2 and last.startswith("googlenet train: error: reading the training shards failed: "), err
        assert any(w in last for w in why) and "Traceback" not in err and err.count("error:") == 1, err

    # Training shards that hold a member far larger than their index declares: the stream stops at the bound.
    big = tmp_path / "big.tar"
    with tarfile.open(big, "w") as tar:
        member = tarfile.TarInfo("huge.png")
        member.size = 4 << 20
        tar.addfile(member, io.BytesIO(bytes(member.size)))
    for entry in index["splits"]["train"]["shards"]:
        shutil.copy(big, copy / entry["file"])
    training_fails("bytes its index declares")
    # Training shards that disappear.
    for entry in index["splits"]["train"]["shards"]:
        (copy / entry["file"]).unlink()
    training_fails("exit status 22", f"{server.url}/shards/train/")  # curl's 404, or webdataset's "empty file"
