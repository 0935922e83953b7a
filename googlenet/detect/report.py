"""What a detection run leaves behind, shared by ``detect train`` and ``bench detect``: detections on a split,
evaluated, written in the exchange formats (VOC results files, COCO results JSON), PR curves and drawn images."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..fileio import atomic_path, atomic_write_text, ensure_dir
from .data import DetectionSet, load_rgb
from .metrics import json_ready


def run_detector(detector, dset: DetectionSet, scorings: Optional[list[str]] = None):
    """{scoring: detections} for every image, and the mean seconds per image split into the detector's parts.
    For an R-CNN detector with several ``scorings``, the features are computed once and scored each way."""
    scorings = scorings or [None]
    dets = {s: {} for s in scorings}
    parts: dict[str, float] = {}
    t_all = 0.0
    for img in dset.images:
        rgb = load_rgb(img)
        t0 = time.perf_counter()
        if hasattr(detector, "detect_each"):  # R-CNN and its ensembles
            out = detector.detect_each(rgb, scorings)
        else:
            out = {s: detector.detect(rgb, s) if s else detector.detect(rgb) for s in scorings}
        timing = dict(getattr(detector, "last_timings", {}) or {})
        t_all += time.perf_counter() - t0
        for s in scorings:
            boxes, labels, scores = out[s]
            dets[s][img.image_id] = (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64),
                                     np.asarray(scores, np.float64))
        for k, v in timing.items():
            parts[k] = parts.get(k, 0.0) + v
    n = max(len(dset.images), 1)
    return dets, {"total": t_all / n, **{k: v / n for k, v in parts.items()}}


def write_outputs(out: Path, dset: DetectionSet, dets, split: str, metrics: dict, *, draw: int = 8,
                  log: Callable[[str], None] = print) -> dict:
    """VOC results files + COCO results JSON under out/results, pr.png, and ``draw`` test images with their boxes
    under out/drawn; returns the paths written."""
    from .draw import draw_boxes
    from .results import write_coco_results, write_voc_results

    out = ensure_dir(out)
    results = ensure_dir(out / "results")
    if dset.kind == "voc":
        write_voc_results(results, dset, dets, split)
    write_coco_results(results / "coco_results.json", dset, dets)
    pr = plot_metrics_pr(metrics, dset, out / "pr.png")
    drawn = ensure_dir(out / "drawn")
    for img in dset.images[:draw]:
        boxes, labels, scores = dets[img.image_id]
        keep = scores >= np.sort(scores)[-min(len(scores), 3 * max(1, len(img.boxes)))] if len(scores) else scores > 0
        with atomic_path(drawn / f"{img.image_id}.jpg") as tmp:
            draw_boxes(load_rgb(img), boxes[keep], labels[keep], scores[keep], dset.classes).save(tmp, "JPEG",
                                                                                                  quality=92)
    return {"results": str(results), "pr": str(pr), "drawn": str(drawn)}


def plot_metrics_pr(metrics: dict, dset: DetectionSet, path: Path):
    """The VOC07 precision-recall curves of ``metrics`` (COCO's at IoU 0.5 where there are no VOC07 ones)."""
    from .draw import plot_pr

    kind, rule = ("voc07", "voc07") if "voc07" in metrics["pr"] else ("coco50", "coco")
    return plot_pr(metrics["pr"].get(kind, {}), path, ap=metrics["ap"].get(rule),
                   title=f"{dset.name}: precision-recall ({'VOC07' if kind == 'voc07' else 'COCO, IoU 0.5'})")


def save_json(path: Path, value: dict) -> None:
    atomic_write_text(path, json.dumps(json_ready(value), indent=1) + "\n")
