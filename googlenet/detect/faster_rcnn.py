"""The single-pass detector beside the paper's R-CNN: torchvision's Faster R-CNN on a GoogLeNet trunk (package
``faster/``). What ``detect train --detector faster-rcnn`` and ``load_detector`` call."""

from __future__ import annotations

from .faster.model import FasterRCNNDetector, build_faster_rcnn
from .faster.recipe import FasterRecipe, load_recipe
from .faster.train import train_faster

__all__ = ["FasterRCNNDetector", "FasterRecipe", "build_faster_rcnn", "load_recipe", "train_faster"]
