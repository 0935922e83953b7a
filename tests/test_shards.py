"""WebDataset shards: ``googlenet shards`` writes them deterministically (read back by webdataset itself),
``train --data SHARDS`` learns from them and is a function of its seed, ``eval --data SHARDS`` equals eval on the
folder they came from, also split across 2 torchrun processes (each sample exactly once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from googlenet.cli import main

pytestmark = pytest.mark.slow
REPO = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two easy classes (dark, light) of JPEGs and PNGs in train/ and val/, plus one broken file."""
    root = tmp_path_factory.mktemp("shards") / "images"
    rng = np.random.default_rng(0)
    for split, n in (("train", 48), ("val", 12)):
        for c, name in enumerate(("dark", "light")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                pixels = (rng.integers(0, 100, (40 + i % 7, 52, 3)) + 150 * c).astype(np.uint8)
                Image.fromarray(pixels).save(d / f"{i:02d}.{'jpg' if i % 2 else 'png'}")
    (root / "train" / "dark" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def shards(args, capsys):
    capsys.readouterr()
    code = main(["shards", *args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def shard_set(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("set") / "shards"
    assert main(["shards", "--data", str(folder), "--out", str(out), "--shard-size", "40KB", "--workers", "2"]) == 0
    return out


def test_index_counts_the_folder_and_webdataset_reads_it_back(folder, shard_set):
    import webdataset as wds

    index = json.loads((shard_set / "index.json").read_text())
    assert index["classes"] == ["dark", "light"]
    train = index["splits"]["train"]
    assert train["count"] == 96 and train["per_class"] == {"0": 48, "1": 48} and len(train["shards"]) > 2
    assert [s["error"] for s in train["skipped"]] and "broken.jpg" in train["skipped"][0]["file"]
    assert index["splits"]["val"]["count"] == 24
    for s in train["shards"]:  # the size bound holds, less tar's end-of-archive padding
        assert s["bytes"] == (shard_set / s["file"]).stat().st_size <= 40_000 + 10240
    urls = [str(shard_set / s["file"]) for s in train["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == 96 and sum(int(s["cls"]) for s in samples) == 48
    first = samples[0]
    original = sorted((folder / "train" / "dark").glob("*.png"))[0]
    assert first["png"] == original.read_bytes()  # unresized JPEG/PNG bytes go in as they are


def test_writing_is_deterministic_and_resize_shrinks_the_shorter_side(folder, shard_set, tmp_path, capsys):
    again = shards(["--data", str(folder), "--out", str(tmp_path / "again"), "--shard-size", "40KB"], capsys)
    for s in again["splits"]["train"]["shards"]:  # one process here, two for the fixture: the same bytes
        assert (tmp_path / "again" / s["file"]).read_bytes() == (shard_set / s["file"]).read_bytes()
    small = shards(["--data", str(folder), "--out", str(tmp_path / "small"), "--resize", "24"], capsys)
    with tarfile.open(tmp_path / "small" / small["splits"]["train"]["shards"][0]["file"]) as tar:
        member = next(m for m in tar if m.name.endswith((".jpg", ".png")))
        w, h = Image.open(tar.extractfile(member)).size
    assert min(w, h) == 24 and small["resize"] == 24


def test_train_from_shards_learns_and_is_a_function_of_its_seed(shard_set, tmp_path, capsys):
    runs = []
    for name in ("a", "b"):
        capsys.readouterr()
        code = main(["train", "--data", str(shard_set), "--arch", "googlenet_bn", "--input-size", "64",
                     "--batch-size", "16", "--epochs", "3", "--workers", "2", "--precision", "fp32", "--seed", "1",
                     "--out", str(tmp_path / name), "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        runs.append(json.loads(out.strip().splitlines()[-1]))
    assert runs[0]["eval_images"] == 24 and runs[0]["train_images_per_epoch"] == 96
    # Learning is read on the training stream (train mode): after 18 steps BatchNorm's running averages are still
    # near their start, so held-out figures of so short a run say little (tests/test_train_run.py scores that).
    rows = [ln.split(",") for ln in (tmp_path / "a" / "metrics.csv").read_text().splitlines()]
    col = {name: i for i, name in enumerate(rows[0])}
    losses, accs = [float(r[col["train_loss"]]) for r in rows[1:]], [float(r[col["train_top1"]]) for r in rows[1:]]
    assert accs[-1] >= 0.85 and losses[-1] < losses[0] - 0.2, (losses, accs)
    a, b = (load_file(str(tmp_path / n / "weights.safetensors")) for n in "ab")
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def eval_json(args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*args, "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_eval_on_shards_equals_the_folder_and_splits_exactly_once_over_ranks(folder, shard_set, tmp_path):
    assert main(["train", "--data", str(folder), "--arch", "googlenet_bn", "--input-size", "64", "--epochs", "1",
                 "--batch-size", "16", "--workers", "0", "--out", str(tmp_path / "run")]) == 0
    weights = ["--weights", str(tmp_path / "run" / "weights.safetensors"), "--crops", "10"]
    on_folder = eval_json([sys.executable, "-m", "googlenet", "eval", "--data", str(folder), *weights])
    on_shards = eval_json([sys.executable, "-m", "googlenet", "eval", "--data", str(shard_set), *weights])
    two_ranks = eval_json([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "googlenet",
                           "eval", "--data", str(shard_set), *weights])
    assert on_folder["images"] == on_shards["images"] == two_ranks["images"] == 24
    assert two_ranks["world_size"] == 2
    for key in ("correct1", "correct5"):
        assert on_folder[key] == on_shards[key] == two_ranks[key]


@pytest.mark.parametrize("case, message", [
    ("outside", "points outside the shard folder"),
    ("not_index", "is not a googlenet shard index"),
    ("counts", "do not add up"),
    ("size", "--shard-size must be a size such as 256MB"),
    ("missing", "is not a folder of images"),
])
def test_bad_inputs_are_one_line(shard_set, tmp_path, capsys, case, message):
    bad = tmp_path / "bad"
    bad.mkdir()
    index = json.loads((shard_set / "index.json").read_text())
    if case == "outside":
        index["splits"]["train"]["shards"][0]["file"] = "../../etc/passwd"
    elif case == "not_index":
        index = {"format": "something-else"}
    elif case == "counts":
        index["splits"]["train"]["count"] += 1
    (bad / "index.json").write_text(json.dumps(index))
    capsys.readouterr()
    if case == "size":
        code = main(["shards", "--out", str(tmp_path / "o"), "--shard-size", "lots"])
    elif case == "missing":
        code = main(["shards", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    else:
        code = main(["train", "--data", str(bad), "--epochs", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
