"""Same seed, same machine, same weights: ``--precision auto`` keeps its verdict across runs (a busy CPU cannot
flip it), and ``--deterministic`` with DataLoader workers trains bit-identical weights twice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from safetensors.torch import load_file

pytestmark = pytest.mark.slow
SMALL = ["--arch", "googlenet_bn", "--input-size", "64", "--batch-size", "8", "--seed", "0", "--epochs", "1"]


def train(args, out: Path, cache: Path) -> subprocess.CompletedProcess:
    # One thread, as in the rest of the suite (conftest.py): two OpenMP threads beside a busy process wait on each
    # other for minutes. Both runs of a pair have the same thread count, so the comparison is fair.
    env = {**os.environ, "GOOGLENET_PRECISION_CACHE": str(cache), "PYTHONPATH": str(Path(__file__).parents[1]),
           "OMP_NUM_THREADS": "1"}
    env.pop("GOOGLENET_REPROBE", None)
    proc = subprocess.run([sys.executable, "-m", "googlenet", "train", *SMALL, *args, "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def weights(run: Path) -> dict:
    return load_file(str(run / "weights.safetensors"))


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not np.array_equal(a[k].numpy(), b[k].numpy())]
    assert different == []


def test_auto_precision_gives_the_same_weights_while_the_cpu_is_busy(tmp_path):
    data = ["--classes", "0,1", "--per-class", "16"]
    first = train(data, tmp_path / "a", tmp_path / "cache")
    assert "fresh probe, kept in" in first.stderr
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])]  # one core of the two kept busy
    try:
        second = train(data, tmp_path / "b", tmp_path / "cache")
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert "kept from the probe of" in second.stderr and "fresh probe" not in second.stderr
    configs = [yaml.safe_load((tmp_path / r / "config.yaml").read_text()) for r in "ab"]
    assert configs[0]["precision"] == configs[1]["precision"] in ("fp32", "bf16")
    assert_identical(weights(tmp_path / "a"), weights(tmp_path / "b"))
    third = train([*data, "--reprobe"], tmp_path / "c", tmp_path / "cache")
    assert "re-probed, kept in" in third.stderr


def image_folder(root: Path) -> Path:
    """Two classes of 16 small PNGs each (train/ and val/), drawn from a fixed seed."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("val", 4)):
        for c, name in enumerate(("dark", "light")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 128, (40, 48, 3)) + 127 * c
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def test_deterministic_with_two_workers_trains_the_same_weights_twice(tmp_path):
    data = ["--data", str(image_folder(tmp_path / "images")), "--workers", "2", "--deterministic"]
    for run in "ab":
        train(data, tmp_path / run, tmp_path / "cache")
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert saved["deterministic"] is True and saved["workers"] == 2
    assert_identical(weights(tmp_path / "a"), weights(tmp_path / "b"))


def test_a_resumed_auto_run_keeps_its_checkpoints_precision_over_the_cache(tmp_path):
    data = ["--classes", "0,1", "--per-class", "8"]
    train([*data, "--precision", "bf16"], tmp_path / "run", tmp_path / "cache")
    cache = tmp_path / "cache"
    resumed = train([*data, "--epochs", "2", "--resume", "auto"], tmp_path / "run", cache)
    assert f"precision bf16 (auto: kept from {tmp_path / 'run' / 'last.pt'})" in resumed.stderr
    assert not cache.exists()  # nothing was probed, so nothing was kept
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["precision"] == "bf16"
