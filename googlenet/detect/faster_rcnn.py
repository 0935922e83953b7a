"""The single-pass detector beside the paper's R-CNN: torchvision's Faster R-CNN on a GoogLeNet trunk (package
``faster/``). What ``detect train --detector faster-rcnn`` and ``load_detector`` call."""

from __future__ import annotations

import argparse
from pathlib import Path

from .faster.model import FasterRCNNDetector, build_faster_rcnn
from .faster.recipe import FasterRecipe, load_recipe
from .faster.train import train_faster

__all__ = ["FasterRCNNDetector", "FasterRecipe", "build_faster_rcnn", "load_recipe",
           "train_faster", "train_faster_rcnn"]


def train_faster_rcnn(train_set, test_set, args: argparse.Namespace) -> Path:
    """Trains on ``train_set`` with the recipe and flags in ``args``; writes OUT/detector.safetensors; returns it.
    (``test_set`` is scored by the caller, the same way for both detectors.)"""
    import sys

    over = {k: getattr(args, k, None) for k in ("trunk", "epochs", "batch_size", "lr", "min_size", "max_size",
                                                "device", "workers", "arch", "seed")}
    recipe = load_recipe(args.recipe or "cpu", over)
    detector = train_faster(train_set, recipe, args.init, args.iterations,
                            lambda m: print(m, file=sys.stderr, flush=True))
    return detector.save(Path(args.out) / "detector.safetensors")
