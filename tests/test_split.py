"""One-folder split: stratified within one image, old files keep their side when files are added, every class on both sides, lists written,
small classes refused; --balance draws classes equally; embedded --classes/--per-class selection."""

from __future__ import annotations

import os

import pytest
import torch

from googlenet.data import embedded
from googlenet.data.split import imbalance_note, read_lists, split_folder, write_lists
from googlenet.errors import UserError
from googlenet.train.data import balanced_batches


def _folder(root, counts, start=0):
    for c, n in counts.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + n):
            (root / c / f"img_{i:04d}.png").write_bytes(b"x")  # the split reads names only


def _sides(train, val, root):
    return {os.path.relpath(s.path, root): side for side, items in (("train", train), ("val", val)) for s in items}


def _within_one(counts, fraction):
    return all(abs(v["val"] - fraction * (v["train"] + v["val"])) <= 1 for v in counts.values())


def test_adding_ten_percent_new_files_moves_no_old_file_and_stays_stratified(tmp_path):
    root = tmp_path / "data"
    _folder(root, {"cat": 200, "dog": 150, "eel": 50, "fox": 7})
    train, val, names, counts = split_folder(root, 0.2)
    assert _within_one(counts, 0.2) and counts["cat"] == {"train": 160, "val": 40}
    before = _sides(train, val, root)
    write_lists(tmp_path, root, train, val, names)
    _folder(root, {"cat": 20, "dog": 15, "eel": 5, "fox": 1}, start=1000)
    train, val, names, counts = split_folder(root, 0.2, read_lists(tmp_path))
    after = _sides(train, val, root)
    assert len(after) == 448 and all(after[f] == side for f, side in before.items())
    assert _within_one(counts, 0.2) and counts["cat"] == {"train": 176, "val": 44, "kept": 200}


def _shuffled_scandir(seed):
    """os.scandir with its entries in a shuffled order: what another file system, or another day, may list."""
    import random

    real, rng = os.scandir, random.Random(seed)

    class Listing:
        def __init__(self, path="."):
            with real(path) as it:
                self.entries = list(it)
            rng.shuffle(self.entries)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def __iter__(self):
            return iter(self.entries)

        def close(self):
            pass

    return Listing


def test_split_is_a_function_of_the_names_not_of_listing_order_or_dates(tmp_path, monkeypatch):
    counts = {"cat": 60, "dog": 45, "eel": 9}
    root = tmp_path / "data"
    _folder(root, counts)
    first = _sides(*split_folder(root, 0.2)[:2], root)
    # The same names created in the reverse order in another folder, with other dates, listed in shuffled orders.
    other = tmp_path / "other"
    for c, n in reversed(counts.items()):
        (other / c).mkdir(parents=True)
        for i in reversed(range(n)):
            (other / c / f"img_{i:04d}.png").write_bytes(b"x")
    rng = torch.Generator().manual_seed(0)
    for path in other.rglob("*.png"):
        stamp = 1_000_000_000 + int(torch.randint(0, 10 ** 8, (1,), generator=rng))
        os.utime(path, (stamp, stamp))
    for seed in range(3):
        with monkeypatch.context() as m:
            m.setattr(os, "scandir", _shuffled_scandir(seed))
            for folder in (root, other):
                assert _sides(*split_folder(folder, 0.2)[:2], folder) == first, (folder, seed)


def test_split_is_stratified_within_one_image_and_counts_are_reported(tmp_path):
    _folder(tmp_path, {"a": 400, "b": 401, "c": 3, "d": 13})
    for fraction in (0.1, 0.25, 0.5, 0.9):
        train, val, names, counts = split_folder(tmp_path, fraction)
        assert names == ["a", "b", "c", "d"] and len(train) + len(val) == 817
        assert _within_one(counts, fraction), counts
        assert all(v["train"] >= 1 and v["val"] >= 1 for v in counts.values())
    write_lists(tmp_path, tmp_path, train, val, names)
    lines = (tmp_path / "split_val.txt").read_text().splitlines()
    assert len(lines) == len(val) and all(line.split("\t")[1] in names for line in lines)


def test_lists_round_trip_odd_names_and_bad_lists_are_one_line(tmp_path):
    root = tmp_path / "data"
    for name in ("tab\there.png", "new\nline.png", "back\\slash.png", "plain.png"):
        (root / "odd").mkdir(parents=True, exist_ok=True)
        (root / "odd" / name).write_bytes(b"x")
    _folder(root, {"even": 4})
    train, val, names, _ = split_folder(root, 0.5)
    write_lists(tmp_path, root, train, val, names)
    placed = read_lists(tmp_path)
    assert placed == {k: (side, k.split("/")[0]) for k, side in _sides(train, val, root).items()}
    (tmp_path / "split_val.txt").write_text("no tab here\n")
    with pytest.raises(UserError, match=r"split_val.txt line 1: expected 'relative path<TAB>class'"):
        read_lists(tmp_path)
    with pytest.raises(UserError, match="holds no split_train.txt"):
        read_lists(tmp_path / "nowhere")


def test_two_image_class_keeps_one_on_each_side_and_one_image_class_is_refused(tmp_path):
    _folder(tmp_path, {"big": 30, "pair": 2})
    train, val, names, counts = split_folder(tmp_path, 0.2)
    assert counts["pair"] == {"train": 1, "val": 1}
    assert "consider --balance" in imbalance_note(counts)
    _folder(tmp_path, {"lonely": 1})
    with pytest.raises(UserError, match="'lonely' .* fewer than 2 images"):
        split_folder(tmp_path, 0.2)


def test_balanced_batches_draw_each_class_equally():
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    drawn = torch.cat(balanced_batches(labels, 64, seed=0, epoch=0))
    assert len(drawn) == 1000
    share = torch.bincount(labels[drawn], minlength=3).double() / 1000
    assert torch.allclose(share, torch.full((3,), 1 / 3, dtype=torch.double), atol=0.05)
    assert torch.equal(drawn, torch.cat(balanced_batches(labels, 64, seed=0, epoch=0)))


def test_embedded_class_selection_renumbers_and_limits():
    train, held = embedded.load_fashion()
    a, b = embedded.select(train, held, "5-9", 20)
    assert a.class_names == embedded.CLASS_NAMES[5:] and torch.equal(torch.bincount(a.labels), torch.full((5,), 20))
    assert len(b) == int(((held.labels >= 5)).sum()) and int(b.labels.max()) == 4
    with pytest.raises(UserError, match="expected indices"):
        embedded.select(train, held, "3-12", None)


@pytest.mark.slow
def test_train_on_one_folder_writes_lists_and_balances(tmp_path, capsys):
    from PIL import Image

    from googlenet.cli import main

    for c, n in (("red", 6), ("blue", 3)):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (40, 30), (200, 20 * i, 0) if c == "red" else (0, 20 * i, 200)).save(
                tmp_path / "data" / c / f"{i}.png")
    code = main(["train", "--data", str(tmp_path / "data"), "--val-fraction", "0.3", "--balance", "--epochs", "1",
                 "--batch-size", "4", "--input-size", "64", "--freeze", "trunk", "--workers", "0",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "class counts (train/val): blue " in err
    listed = (tmp_path / "run" / "split_train.txt").read_text().splitlines() + \
        (tmp_path / "run" / "split_val.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == sorted(
        f"{c}/{i}.png" for c, n in (("red", 6), ("blue", 3)) for i in range(n))
    old_val = (tmp_path / "run" / "split_val.txt").read_text().splitlines()
    for i in range(6, 9):  # new images, then a new run that starts from the first run's split
        Image.new("RGB", (40, 30), (200, 20 * i, 0)).save(tmp_path / "data" / "red" / f"{i}.png")
    code = main(["train", "--data", str(tmp_path / "data"), "--val-fraction", "0.3", "--epochs", "1",
                 "--batch-size", "4", "--input-size", "64", "--freeze", "trunk", "--workers", "0",
                 "--split-from", str(tmp_path / "run"), "--out", str(tmp_path / "run2")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"split: 9 files kept their side from {tmp_path / 'run'}, 3 placed afresh" in err
    new_val = (tmp_path / "run2" / "split_val.txt").read_text().splitlines()
    assert set(old_val) <= set(new_val) and len(new_val) == 1 + 3  # red 9 images: round(2.7) = 3; blue 1 of 3


def test_what_the_scan_leaves_out_rides_on_the_train_side_outside_the_lists(tmp_path):
    root = tmp_path / "data"
    _folder(root, {"a": 5, "b": 5})
    os.mkfifo(root / "a" / "pipe.png")
    os.symlink("..", root / "b" / "loop")
    train, val, names, counts = split_folder(root, 0.2)
    skipped = sorted(os.path.basename(s.path) for s in train if s.skip is not None)
    assert skipped == ["loop", "pipe.png"] and all(s.skip is None for s in val)
    assert counts == {"a": {"train": 4, "val": 1}, "b": {"train": 4, "val": 1}}
    write_lists(tmp_path, root, train, val, names)
    listed = (tmp_path / "split_train.txt").read_text().splitlines()
    assert len(listed) == 8 and not any("pipe" in line or "loop" in line for line in listed)
