"""Object detection on the GoogLeNet trunk (docs/detection.md): the paper's R-CNN with selective search and MultiBox
proposals, a Faster R-CNN on the same trunk, and the VOC / ILSVRC / COCO evaluators.

Modules: ``data`` (VOC and COCO readers), ``metrics`` (the evaluators), ``results`` (VOC results files, COCO results
JSON), ``draw`` (boxes on images, PR and recall curves), ``scenes`` (the offline scene set). The public names below
are imported on first use, so ``import googlenet.detect`` stays quick.
"""

import importlib

# name -> the module that defines it: googlenet.detect.Detector.load(W)(image) -> boxes, labels, scores; the readers
# and the evaluators as functions (docs/api.md).
_PUBLIC = {"Detector": "detector", "read_voc": "data", "read_coco": "data", "read_detection_set": "data",
           "evaluate_detections": "metrics", "evaluate_voc": "metrics", "evaluate_coco": "metrics",
           "voc07_ap": "metrics", "voc12_ap": "metrics", "read_detections": "results"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
