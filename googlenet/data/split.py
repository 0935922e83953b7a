"""One-folder datasets: ``DIR/<class>/*`` without train/ and val/ gets a deterministic, stratified validation split.

Two promises, and why they need the previous split: each class's validation share is within one image of
``val_fraction``, and adding files never moves an old file between the sides. No rule that looks at one path at a
time can keep both (TensorFlow's image-retraining example hashes each path against the fraction: stable, but a
class's share is binomial, +-9 images for 400 at 0.2), so the split is made in two steps:

- files the previous split already placed (the lists ``split_train.txt``/``split_val.txt`` of the run folder, or of
  ``--split-from RUN``) keep their side;
- the other files of each class are taken in the order of the SHA-256 of their path relative to DIR and each goes
  to the validation side exactly when the class's validation count is below round(val_fraction x files so far)
  (systematic sampling in hash order), keeping one image on each side.

A fresh split is therefore a function of the folder's file names alone (no dates, no listing order), and a split
extended by new files stays within one image of the fraction per class.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Optional

from ..errors import UserError
from ..fileio import atomic_path, read_bounded
from .folder import Sample, printable, scan_image_folder

IMBALANCE_RATIO = 3.0  # largest class / smallest class above this is reported
LIST_NAMES = {"train": "split_train.txt", "val": "split_val.txt"}
MAX_LIST_BYTES = 256 << 20  # a list of a few million paths; a bigger "list" is not one of ours


def path_fraction(relative: str) -> float:
    """u in [0, 1) from the first 8 bytes of SHA-256 of the relative path (POSIX separators)."""
    digest = hashlib.sha256(relative.replace(os.sep, "/").encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def _relative(s: Sample, root: Path) -> str:
    return os.path.relpath(s.path, root).replace(os.sep, "/")


# A name on one line of a list: backslash, tab and line breaks escaped (file names may hold any of them).
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _unescape(text: str) -> str:
    out, chars = [], iter(text)
    for ch in chars:
        out.append({"t": "\t", "n": "\n", "r": "\r"}.get(nxt := next(chars, ""), nxt) if ch == "\\" else ch)
    return "".join(out)


def read_lists(run: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """{relative path: (side, class name)} from a run folder's split lists (or one of the list files)."""
    run = Path(run)
    folder = run.parent if run.name in LIST_NAMES.values() else run
    placed: dict[str, tuple[str, str]] = {}
    for side, name in LIST_NAMES.items():
        path = folder / name
        if not path.exists():
            raise UserError(f"{printable(folder)} holds no {name}: --split-from takes a run folder of a one-folder "
                            f"training run")
        try:
            text = read_bounded(path, limit=MAX_LIST_BYTES).decode("utf-8", "surrogateescape")
        except OSError as e:
            raise UserError(f"cannot read {printable(path)}: {e.strerror or e}") from None
        for n, line in enumerate(text.split("\n"), 1):  # not splitlines: \x0c and \u2028 may be in names
            if not line:
                continue
            rel, tab, cls = line.partition("\t")
            if not tab or not rel or "\t" in cls:
                raise UserError(f"{printable(path)} line {n}: expected 'relative path<TAB>class', got {line[:80]!r}")
            placed[_unescape(rel)] = (side, _unescape(cls))
    return placed


def split_folder(root: str | os.PathLike, val_fraction: float = 0.2,
                 previous: Optional[dict[str, tuple[str, str]]] = None):
    """(train samples, val samples, class names, per-class counts) of a one-folder dataset.

    ``previous`` (from read_lists): files it places keep their side when their class is unchanged; the counts
    then also hold "kept" (files placed by it) per class.
    """
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    root = Path(root)
    previous = previous or {}
    samples, class_names = scan_image_folder(root)
    # What the scan left out (links in a cycle, FIFOs, ...) has no class: it rides on the training side, where the
    # loader reports it as skipped like any unreadable file, and stays out of the counts and the lists.
    left_out = [s for s in samples if s.skip is not None]
    per_class: dict[int, list[Sample]] = {c: [] for c in range(len(class_names))}
    for s in samples:
        if s.skip is None:
            per_class[s.label].append(s)
    if small := [class_names[c] for c, items in per_class.items() if len(items) < 2]:
        raise UserError(f"class {printable(small[0])!r} of {printable(root)} has fewer than 2 images; a one-folder "
                        f"split needs at least 2 per class ({len(small)} such class(es))")
    train, val, counts = [], [], {}
    for c, items in per_class.items():
        name = class_names[c]
        kept = {id(s): previous[r][0] for s in items
                if (r := _relative(s, root)) in previous and previous[r][1] == name}
        side_val = [s for s in items if kept.get(id(s)) == "val"]
        side_train = [s for s in items if kept.get(id(s)) == "train"]
        fresh = sorted((s for s in items if id(s) not in kept), key=lambda s: path_fraction(_relative(s, root)))
        for s in fresh:
            total = len(side_val) + len(side_train) + 1
            target = math.floor(val_fraction * total + 0.5)  # round half up
            if total >= 2:  # one image on each side: the second file of a class goes where the first is not
                target = min(max(target, 1), total - 1)
            (side_val if len(side_val) < target else side_train).append(s)
        if not side_val or not side_train:  # only a previous split can leave this (a class it knew one side of)
            raise UserError(f"class {printable(name)!r}: the previous split put all {len(items) - len(fresh)} of its "
                            f"known images on one side and no new image can balance it; split afresh")
        train += side_train
        val += side_val
        counts[name] = {"train": len(side_train), "val": len(side_val)}
        if previous:
            counts[name]["kept"] = len(kept)
    return train + left_out, val, class_names, counts


def imbalance_note(counts: dict) -> str | None:
    sizes = {c: v["train"] + v["val"] for c, v in counts.items()}
    big, small = max(sizes, key=sizes.get), min(sizes, key=sizes.get)
    if sizes[big] > IMBALANCE_RATIO * sizes[small]:
        return (f"class imbalance: {printable(big)!r} has {sizes[big]} images, {printable(small)!r} {sizes[small]} "
                f"({sizes[big] / sizes[small]:.1f}x); consider --balance")
    return None


def write_lists(out: Path, root: Path, train: list[Sample], val: list[Sample], class_names: list[str]) -> None:
    for side, name in LIST_NAMES.items():
        lines = [f"{_relative(s, root).translate(_ESCAPES)}\t{class_names[s.label].translate(_ESCAPES)}"
                 for s in (train if side == "train" else val) if s.skip is None]
        with atomic_path(out / name) as tmp:  # surrogateescape: names that are not UTF-8 round-trip as bytes
            tmp.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
