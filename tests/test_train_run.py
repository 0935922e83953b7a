"""googlenet train end to end on tiny slices: artefacts, JSON, resume exactness, kill -9, torchrun, bad inputs,
broken files, non-finite losses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from googlenet import load_model
from googlenet.cli import main
from googlenet.train.config import resolve
from googlenet.train.loop import train

pytestmark = pytest.mark.slow
TINY = ["--epochs", "1", "--max-train-images", "64", "--max-eval-images", "32", "--input-size", "64",
        "--batch-size", "32"]


def run_cli(args, capsys):
    code = main(["train", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_tiny_run_leaves_every_artefact(tmp_path, capsys):
    cfg_file = tmp_path / "over.yaml"
    cfg_file.write_text("label_smoothing: 0.05\nseed: 3\n")
    code, out, err = run_cli([*TINY, "--out", str(tmp_path / "run"), "--config", str(cfg_file), "--seed", "4",
                              "--json"], capsys)
    assert code == 0, err
    res = last_json(out)
    for key in ("weights", "checkpoint", "metrics", "plot", "top1", "top5", "best_top1", "epochs", "images_per_s",
                "wall_s", "skipped_files"):
        assert key in res
    assert res["epochs"] == 1 and res["skipped_files"] == [] and 0 <= res["top1"] <= res["top5"] <= 1
    assert res["train_images_per_epoch"] == 64 and res["eval_images"] == 32
    run = tmp_path / "run"
    saved = __import__("yaml").safe_load((run / "config.yaml").read_text())
    assert saved["label_smoothing"] == 0.05 and saved["seed"] == 4 and saved["recipe"] == "fashion-quick"
    for name in ("last.pt", "best.pt"):
        ck = torch.load(run / name, map_location="cpu", weights_only=True)
        assert ck["config"] == saved and ck["epoch"] == 1 and isinstance(ck["rng"]["torch"], torch.Tensor)
        assert set(ck) >= {"model", "ema", "optimizer", "scheduler", "metrics", "class_names"}
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,") and len(rows) == 2
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = load_model(res["weights"])
    assert model.preprocessing["input_size"] == 64 and model.preprocessing["mean"] == [0.286] * 3
    assert model.class_names[0] == "T-shirt/top"
    # The exported weights are the EMA ones, the ones evaluated.
    ema = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["ema"]["module"]
    assert torch.equal(model.state_dict()["fc.weight"], ema["fc.weight"])
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_human_run_says_where_things_are(tmp_path, capsys):
    code, out, err = run_cli([*TINY, "--out", str(tmp_path)], capsys)
    assert code == 0
    assert f"weights: {tmp_path}/weights.safetensors" in out and "metrics:" in out and "plot:" in out
    assert "epoch 1/1" in err


def _state(path):
    ck = torch.load(path, map_location="cpu", weights_only=True)
    return ck["model"], ck["ema"]["module"], ck["optimizer"]


def test_resume_at_epoch_boundary_is_bitwise_exact(tmp_path, monkeypatch):
    import googlenet.train.loop as loop

    over = dict(max_train_images=48, max_eval_images=16, batch_size=16, input_size=64, seed=7, epochs=2)
    train(resolve(None, None, {**over, "out": str(tmp_path / "a")}), quiet=True)

    def killed_at_boundary(*args, **kwargs):  # the process dies right after epoch 1's checkpoint is written
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(loop, "write_plot", killed_at_boundary)
        with pytest.raises(KeyboardInterrupt):
            train(resolve(None, None, {**over, "out": str(tmp_path / "b")}), quiet=True)
    assert torch.load(tmp_path / "b/last.pt", weights_only=True)["epoch"] == 1
    torch.manual_seed(999)  # the resumed run must not depend on the process's RNG state
    train(resolve(None, None, {**over, "out": str(tmp_path / "b")}), resume="auto", quiet=True)
    (ma, ea, oa), (mb, eb, ob) = _state(tmp_path / "a/last.pt"), _state(tmp_path / "b/last.pt")
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    sa, sb = oa["state"], ob["state"]  # the optimizer moments resume exactly too
    assert sa.keys() == sb.keys() and all(
        torch.equal(sa[i][k], sb[i][k]) if torch.is_tensor(sa[i][k]) else sa[i][k] == sb[i][k]
        for i in sa for k in sa[i])
    wa = load_model(tmp_path / "a/weights.safetensors").state_dict()
    wb = load_model(tmp_path / "b/weights.safetensors").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _cli(*args):
    return [sys.executable, "-m", "googlenet", "train", *args]


def test_kill_9_mid_epoch_then_resume_auto(tmp_path):
    out = tmp_path / "run"
    args = _cli("--epochs", "3", "--max-train-images", "192", "--max-eval-images", "16", "--batch-size", "16",
                "--input-size", "64", "--out", str(out), "--json")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while not (out / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert (out / "last.pt").exists(), "epoch 1 never finished"
    time.sleep(0.5)  # inside epoch 2 (12 steps of 16 images)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert 1 <= killed["epoch"] < 3
    done = subprocess.run(args + ["--resume", "auto"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {out}/last.pt at epoch {killed['epoch']}" in done.stderr
    res = json.loads(done.stdout.strip().splitlines()[-1])
    assert res["epochs"] == 3
    final = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert final["metrics"][:killed["epoch"]] == killed["metrics"]  # nothing lost but the unfinished epoch
    assert [r["epoch"] for r in final["metrics"]] == [1, 2, 3]


def test_torchrun_two_processes_cover_the_data_like_one(tmp_path):
    # 50 images at global batch 16: the last batch (2 images) is split 1 + 1, and 30 eval images 15 + 15.
    common = ["--epochs", "1", "--max-train-images", "50", "--max-eval-images", "30", "--batch-size", "16",
              "--input-size", "64", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "googlenet", "train", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(_cli(*common, "--out", str(tmp_path / "one")), capture_output=True, text=True,
                         timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    r2, r1 = (json.loads(p.stdout.strip().splitlines()[-1]) for p in (two, one))
    assert r2["world_size"] == 2 and r1["world_size"] == 1
    assert r2["train_images_per_epoch"] == r1["train_images_per_epoch"] == 50
    assert r2["eval_images"] == r1["eval_images"] == 30
    assert len([ln for ln in two.stdout.splitlines() if ln.startswith("{")]) == 1  # rank 0 alone reports
    assert (tmp_path / "two/weights.safetensors").is_file()


def _image_folder(root: Path, classes=("cat", "dog"), per_class=6) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class if split == "train" else 2):
                arr = rng.integers(0, 255, (40 + 8 * i, 70, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")


def test_broken_files_are_skipped_and_reported(tmp_path, capsys):
    data = tmp_path / "data"
    _image_folder(data)
    (data / "train/cat/empty.jpg").write_bytes(b"")
    (data / "train/dog/notes.txt").write_text("not an image")
    good = (data / "train/dog/0.png").read_bytes()
    (data / "train/dog/truncated.png").write_bytes(good[: len(good) // 3])
    Image.fromarray(np.zeros((30, 30), np.uint16) + 3000).save(data / "train/cat/gray16.png")  # odd but fine
    code, out, err = run_cli(["--data", str(data), "--epochs", "1", "--batch-size", "4", "--input-size", "64",
                              "--workers", "2", "--out", str(tmp_path / "run"), "--json"], capsys)
    assert code == 0, err
    res = last_json(out)
    names = sorted(Path(s["file"]).name for s in res["skipped_files"])
    assert names == ["empty.jpg", "notes.txt", "truncated.png"]
    assert res["train_images_per_epoch"] == 13 and res["eval_images"] == 4
    model = load_model(res["weights"])
    assert model.class_names == ["cat", "dog"] and model.preprocessing["input_size"] == 64


@pytest.mark.parametrize("make,message", [
    (lambda d: None, "data folder not found"),
    (lambda d: _image_folder(d, classes=("only",)), "has 1 class folder; training needs at least 2"),
    (lambda d: (d / "train/a").mkdir(parents=True) or (d / "val/a").mkdir(parents=True)
     or (d / "train/b").mkdir(parents=True), "no files found"),
])
def test_bad_datasets_exit_2_one_line(tmp_path, capsys, make, message):
    data = tmp_path / "data"
    make(data)
    code, out, err = run_cli(["--data", str(data), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_unwritable_out_exit_2_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = run_cli([*TINY, "--out", str(blocker / "run")], capsys)
    assert code == 2 and "cannot create output folder" in err and err.count("\n") == 1, err


def test_nonfinite_loss_stops_with_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    # 64 images at batch 32: steps 0-1 are epoch 1, step 2 (poisoned with NaN input) is in epoch 2.
    monkeypatch.setenv("GOOGLENET_TEST_NAN_AT_STEP", "2")
    args = ["--epochs", "2", "--max-train-images", "64", "--max-eval-images", "16", "--batch-size", "32",
            "--input-size", "64", "--out", str(tmp_path / "run")]
    code, out, err = run_cli(args, capsys)
    last = err.strip().splitlines()[-1]  # the progress log comes before; the error is one line at the end
    assert code == 2 and last.startswith("googlenet train: error: non-finite loss (nan) at epoch 2, step 2;"), err
    assert "(epoch 1) is intact" in last
    assert torch.load(tmp_path / "run/last.pt", map_location="cpu", weights_only=True)["epoch"] == 1
    code, out, err = run_cli([*args, "--skip-nonfinite", "--json", "--out", str(tmp_path / "skip")], capsys)
    assert code == 0, err
    res = last_json(out)
    assert res["nonfinite_steps"] == 1 and res["epochs"] == 2 and np.isfinite(res["top1"])
