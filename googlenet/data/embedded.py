"""The embedded default dataset: a compact subset of Fashion-MNIST bundled with the package, so the main job runs
offline on a fresh machine.

Fashion-MNIST (Xiao, Rasul and Vollgraf 2017, Zalando Research, MIT licence), taken from Debian's package
``dataset-fashion-mnist`` by ``tools/make_fashion_subset.py``: the first 800 images of each class of the official
training set (8,000) and the first 200 of each class of the official test set (2,000, the held-out part). The full
dataset (60,000 + 10,000) is used instead when ``--data fashion-mnist`` is named and its files are present.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import UserError

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
SUBSET_FILE = Path(__file__).with_name("assets") / "fashion_mnist_subset.npz"
FULL_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
NAMES = ("fashion-mnist-subset", "fashion-mnist")  # accepted by --data besides a folder
# Grayscale statistics of the training set, replicated to 3 channels (the network takes RGB).
MEAN, STD = 0.2860, 0.3530


@dataclass
class ArrayDataset:
    """Images as an N x H x W uint8 tensor with labels; small enough to live in memory."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    name: str

    def __len__(self) -> int:
        return len(self.labels)


def load_fashion(name: str = "fashion-mnist-subset") -> tuple[ArrayDataset, ArrayDataset]:
    """(train, held-out) of the bundled subset or, for "fashion-mnist", the full dataset from FULL_DIR."""
    if name == "fashion-mnist-subset":
        with np.load(SUBSET_FILE) as d:
            parts = [d[k] for k in ("train_images", "train_labels", "test_images", "test_labels")]
    elif name == "fashion-mnist":
        files = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"]
        missing = [f for f in files if not (FULL_DIR / f).is_file()]
        if missing:
            raise UserError(f"full Fashion-MNIST not found in {FULL_DIR} (missing {missing[0]}); "
                            f"apt-get install dataset-fashion-mnist or set FASHION_MNIST_DIR")
        parts = [read_idx(FULL_DIR / f) for f in files]
    else:
        raise UserError(f"unknown embedded dataset {name!r}; choose from {', '.join(NAMES)}")
    xtr, ytr, xte, yte = (torch.from_numpy(np.ascontiguousarray(p)) for p in parts)
    return (ArrayDataset(xtr, ytr.long(), list(CLASS_NAMES), f"{name}/train"),
            ArrayDataset(xte, yte.long(), list(CLASS_NAMES), f"{name}/held-out"))


def parse_classes(spec: str, n: int) -> list[int]:
    """ "0-4" / "5,7,9" / "0-2,8" -> sorted class indices, each in 0..n-1."""
    picked: set[int] = set()
    try:
        for part in str(spec).split(","):
            lo, _, hi = part.strip().partition("-")
            a, b = int(lo), int(hi) if hi else int(lo)
            if not 0 <= a <= b < n:
                raise ValueError
            picked.update(range(a, b + 1))
    except ValueError:
        raise UserError(f"--classes {spec!r}: expected indices in 0..{n - 1} such as 0-4 or 5,7,9") from None
    if len(picked) < 2:
        raise UserError(f"--classes {spec!r}: training needs at least 2 classes")
    return sorted(picked)


def select(train: ArrayDataset, held: ArrayDataset, classes: Optional[str],
           per_class: Optional[int]) -> tuple[ArrayDataset, ArrayDataset]:
    """A class subset (labels renumbered 0..k-1, names kept) and/or the first ``per_class`` training images of each
    class (in file order: deterministic, the same for every seed). The held-out side keeps all its images of the
    chosen classes. Used by the transfer experiment of docs/finetuning.md."""
    n = len(train.class_names)
    keep = parse_classes(classes, n) if classes is not None else list(range(n))
    remap = torch.full((n,), -1, dtype=torch.long)
    remap[torch.tensor(keep)] = torch.arange(len(keep))
    names = [train.class_names[i] for i in keep]

    def part(data: ArrayDataset, limit: Optional[int]) -> ArrayDataset:
        idx = torch.cat([torch.nonzero(data.labels == c).flatten()[:limit] for c in keep]).sort().values
        return ArrayDataset(data.images[idx], remap[data.labels[idx]], names, data.name)

    return part(train, per_class), part(held, None)


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
