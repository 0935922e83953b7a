"""One-folder datasets: ``DIR/<class>/*`` without train/ and val/ gets a deterministic validation split.

A file goes to the validation side when the SHA-256 of its path relative to DIR, read as a number u in [0, 1), is
below ``val_fraction`` (the scheme TensorFlow's image-retraining example uses). The side is a function of that path
alone, so adding files never moves an old file; within each class the validation share is the fraction in
expectation (binomial spread), and the exact counts are printed and written with the lists.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import UserError
from .folder import Sample, printable, scan_image_folder

IMBALANCE_RATIO = 3.0  # largest class / smallest class above this is reported


def path_fraction(relative: str) -> float:
    """u in [0, 1) from the first 8 bytes of SHA-256 of the relative path (POSIX separators)."""
    digest = hashlib.sha256(relative.replace(os.sep, "/").encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def split_folder(root: str | os.PathLike, val_fraction: float = 0.2):
    """(train samples, val samples, class names, per-class counts) of a one-folder dataset."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    root = Path(root)
    samples, class_names = scan_image_folder(root)
    per_class = {c: [] for c in range(len(class_names))}
    for s in samples:
        per_class[s.label].append(s)
    small = [class_names[c] for c, items in per_class.items() if len(items) < 2]
    if small:
        raise UserError(f"class {printable(small[0])!r} of {printable(root)} has fewer than 2 images; a one-folder "
                        f"split needs at least 2 per class ({len(small)} such class(es))")
    train: list[Sample] = []
    val: list[Sample] = []
    counts = {}
    for c, items in per_class.items():
        side_val = [s for s in items if path_fraction(os.path.relpath(s.path, root)) < val_fraction]
        side_train = [s for s in items if s not in side_val]
        # A class must keep one image on each side; the path-hash rule cannot leave either side empty then.
        if not side_val:
            side_val = [min(items, key=lambda s: path_fraction(os.path.relpath(s.path, root)))]
            side_train = [s for s in items if s is not side_val[0]]
        elif not side_train:
            side_train = [max(items, key=lambda s: path_fraction(os.path.relpath(s.path, root)))]
            side_val = [s for s in items if s is not side_train[0]]
        train += side_train
        val += side_val
        counts[class_names[c]] = {"train": len(side_train), "val": len(side_val)}
    return train, val, class_names, counts


def imbalance_note(counts: dict) -> str | None:
    sizes = {c: v["train"] + v["val"] for c, v in counts.items()}
    big, small = max(sizes, key=sizes.get), min(sizes, key=sizes.get)
    if sizes[big] > IMBALANCE_RATIO * sizes[small]:
        return (f"class imbalance: {printable(big)!r} has {sizes[big]} images, {printable(small)!r} {sizes[small]} "
                f"({sizes[big] / sizes[small]:.1f}x); consider --balance")
    return None


def write_lists(out: Path, root: Path, train: list[Sample], val: list[Sample], class_names: list[str]) -> None:
    from ..fileio import atomic_write_text

    for name, items in (("split_train.txt", train), ("split_val.txt", val)):
        lines = [f"{os.path.relpath(s.path, root)}\t{class_names[s.label]}" for s in items]
        atomic_write_text(out / name, "\n".join(lines) + "\n")
