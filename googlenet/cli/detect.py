"""``googlenet detect train|eval|predict|propose``: object detection on the GoogLeNet trunk (docs/detection.md).

Each action lives in its own module, ``detect_<action>.py``, defining ``add_parser(subparsers)`` like the top-level
commands, so the paper's R-CNN, its proposals and the evaluators stay separate files.
"""

from __future__ import annotations

import argparse

from .common import add_commands

ACTIONS = ("train", "eval", "predict", "propose")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="object detection as the paper does it (R-CNN with GoogLeNet as the region "
                                      "classifier) and a single-pass Faster R-CNN on the same trunk",
                       description="Detection: train, evaluate (VOC07 / VOC12 / ILSVRC / COCO mAP), predict, and "
                                   "region proposals with their recall.")
    add_commands(p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p), required=True), ACTIONS,
                 prefix="detect_")
