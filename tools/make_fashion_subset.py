"""Builds googlenet/data/assets/fashion_mnist_subset.npz from Debian's dataset-fashion-mnist package.

    apt-get install dataset-fashion-mnist && python tools/make_fashion_subset.py

Takes the first PER_CLASS_TRAIN images of each class from the official training set and the first PER_CLASS_TEST
of each class from the official test set (Fashion-MNIST, Zalando Research, MIT licence), so the bundled subset is
deterministic and its held-out part never overlaps the training part.
"""

import sys
from pathlib import Path

import numpy as np

from googlenet.data.embedded import read_idx

SRC = Path("/usr/share/datasets/fashion-mnist")
OUT = Path(__file__).resolve().parents[1] / "googlenet" / "data" / "assets" / "fashion_mnist_subset.npz"
PER_CLASS_TRAIN, PER_CLASS_TEST = 800, 200


def take(images: np.ndarray, labels: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    idx.sort()
    return images[idx], labels[idx]


def main() -> int:
    if not SRC.is_dir():
        print(f"{SRC} not found: apt-get install dataset-fashion-mnist", file=sys.stderr)
        return 2
    xtr, ytr = take(read_idx(SRC / "train-images-idx3-ubyte.gz"), read_idx(SRC / "train-labels-idx1-ubyte.gz"),
                    PER_CLASS_TRAIN)
    xte, yte = take(read_idx(SRC / "t10k-images-idx3-ubyte.gz"), read_idx(SRC / "t10k-labels-idx1-ubyte.gz"),
                    PER_CLASS_TEST)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, train_images=xtr, train_labels=ytr, test_images=xte, test_labels=yte)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB): train {xtr.shape}, held-out {xte.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
