"""Detection evaluators: PASCAL VOC2007 11-point AP and VOC2010+ AP as the official devkit computes them
(VOCevaldet.m, VOCap.m), the ILSVRC DET rule for small objects, and COCO AP@[.5:.95] / AP50 through pycocotools.

The devkit's rules, all kept here:
- boxes are compared in VOC pixels (1-based, both ends included), so a box's width is xmax - xmin + 1 and the
  overlap of two boxes counts the shared pixels the same way: the project's 0-based continuous boxes are converted
  back (xmin + 1, ymin + 1, xmax, ymax) before the IoU;
- detections of a class are taken by decreasing score (a stable sort, as MATLAB's ``sort``: ties keep the order of
  the images in the set, then the order within an image); each is assigned to the ground-truth box it overlaps most
  (any box of its class in its image, matched or not); IoU >= 0.5 makes it a true positive if that box is not yet
  matched, a false positive if it is (a duplicate), and neither if that box is "difficult";
- difficult boxes do not count as positives (recall's denominator);
- VOC2007: AP is the mean over recall thresholds 0, 0.1, ..., 1 of the best precision at recall >= t;
  VOC2010+: the area under the precision envelope (VOCap.m).
Where the devkit divides 0 by 0 (precision before the first counted detection, when the first ones hit difficult
boxes) MATLAB's max ignores the NaN; here that precision is 0, which gives the same AP. A class with no positive
box has AP NaN (the devkit's recall is 0/0) and is left out of the mean.

ILSVRC DET (the ILSVRC devkit's eval_detection.m): a ground-truth box of width w and height h is found by an IoU
>= min(0.5, w h / ((w + 10)(h + 10))), so small objects are not lost to a few pixels of error; each detection takes
the unmatched box of the largest IoU above that box's threshold (matched boxes are skipped), AP as VOC2010+.
ILSVRC has no difficult flag; a difficult box here is handled as in VOC (neither true nor false positive).

COCO: the ground truth is built in memory from the DetectionSet (a difficult VOC box becomes iscrowd, COCO's own
"ignore" region) and scored by pycocotools' COCOeval (at most 100 detections an image, as COCO does).
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Iterable, Optional, Sequence

import numpy as np

from ..errors import UserError
from .data import DetectionSet

# image_id -> (boxes (K, 4) float xyxy 0-based continuous, labels (K,) int, scores (K,) float)
Detections = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]

VOC_IOU = 0.5
ILSVRC_PIXEL_TOLERANCE = 10
METRICS = ("voc07", "voc12", "ilsvrc", "coco")
# The headline figures evaluate_detections gives (those of the data's kind), in the order commands print them.
MAP_KEYS = tuple(f"{m}_map" for m in METRICS) + ("coco_map50",)
# The devkit's recall thresholds ``t = 0:0.1:1`` as MATLAB's colon makes them: a + k d for the first half, b - (n - k) d
# for the second, so the fourth is 3 * 0.1 = 0.30000000000000004 and the others are the doubles nearest k / 10. A
# recall of exactly 3/10 is therefore below the t = 0.3 point, in the devkit and here (np.arange(0, 1.1, 0.1), as
# some Python ports use, is also off at 0.6 and 0.7).
VOC07_THRESHOLDS = tuple(k * 0.1 if k <= 5 else 1 - (10 - k) * 0.1 for k in range(11))


def to_voc_pixels(boxes: np.ndarray) -> np.ndarray:
    """0-based continuous xyxy -> VOC 1-based inclusive pixel boxes (float64)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    b[:, :2] += 1
    return b


def voc_overlaps(dets: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """(D, G) IoU of VOC pixel boxes with the devkit's +1 convention; -inf where the boxes share no pixel."""
    ix1 = np.maximum(dets[:, None, 0], gts[None, :, 0])
    iy1 = np.maximum(dets[:, None, 1], gts[None, :, 1])
    iw = np.minimum(dets[:, None, 2], gts[None, :, 2]) - ix1 + 1
    ih = np.minimum(dets[:, None, 3], gts[None, :, 3]) - iy1 + 1
    inter = iw * ih
    area_d = (dets[:, 2] - dets[:, 0] + 1) * (dets[:, 3] - dets[:, 1] + 1)
    area_g = (gts[:, 2] - gts[:, 0] + 1) * (gts[:, 3] - gts[:, 1] + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ov = inter / (area_d[:, None] + area_g[None, :] - inter)
    return np.where((iw > 0) & (ih > 0), ov, -np.inf)


def voc07_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    """VOC2007's 11-point interpolated AP (VOCevaldet.m, VOCopts.year 2007)."""
    ap = 0.0
    for t in VOC07_THRESHOLDS:
        p = prec[rec >= t]
        ap += (p.max() if p.size else 0.0) / 11
    return float(ap)


def voc12_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    """VOC2010+ AP: the area under the monotone precision envelope (VOCap.m)."""
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def _check_detections(dset: DetectionSet, dets: Detections) -> None:
    known = {img.image_id for img in dset.images}
    for image_id, (boxes, labels, scores) in dets.items():
        if image_id not in known:
            raise UserError(f"detections name image {image_id!r}, which is not in {dset.name}")
        if not (len(boxes) == len(labels) == len(scores)):
            raise UserError(f"detections for image {image_id!r}: {len(boxes)} boxes, {len(labels)} labels, "
                            f"{len(scores)} scores")
        labels = np.asarray(labels)
        if labels.size and (labels.min() < 0 or labels.max() >= len(dset.classes)):
            raise UserError(f"detections for image {image_id!r}: a label outside 0..{len(dset.classes) - 1}")


def _class_detections(dset: DetectionSet, dets: Detections, c: int):
    """(image index, VOC pixel box, score) of every detection of class c, by decreasing score, ties in set order."""
    img_idx, boxes, scores = [], [], []
    for i, img in enumerate(dset.images):
        if img.image_id not in dets:
            continue
        b, lab, s = dets[img.image_id]
        keep = np.asarray(lab) == c
        if keep.any():
            img_idx.append(np.full(int(keep.sum()), i))
            boxes.append(to_voc_pixels(np.asarray(b)[keep]))
            scores.append(np.asarray(s, np.float64)[keep])
    if not img_idx:
        return np.zeros(0, int), np.zeros((0, 4)), np.zeros(0)
    img_idx, boxes, scores = np.concatenate(img_idx), np.concatenate(boxes), np.concatenate(scores)
    order = np.argsort(-scores, kind="stable")
    return img_idx[order], boxes[order], scores[order]


def _tp_fp(dset: DetectionSet, c: int, img_idx: np.ndarray, boxes: np.ndarray, rule: str):
    """Per-detection true / false positive flags (0/1 floats) and the number of positives, by the devkit's rule."""
    gt = {i: (to_voc_pixels(img.boxes[img.labels == c]), img.difficult[img.labels == c])
          for i, img in enumerate(dset.images)}
    npos = sum(int((~difficult).sum()) for _, difficult in gt.values())
    tp, fp = np.zeros(len(img_idx)), np.zeros(len(img_idx))
    matched = {i: np.zeros(len(g[0]), bool) for i, g in gt.items()}
    for i in np.unique(img_idx):
        sel = np.flatnonzero(img_idx == i)  # in score order
        gboxes, gdiff = gt[i]
        if len(gboxes) == 0:
            fp[sel] = 1
            continue
        ov = voc_overlaps(boxes[sel], gboxes)
        if rule == "ilsvrc":
            w = gboxes[:, 2] - gboxes[:, 0] + 1
            h = gboxes[:, 3] - gboxes[:, 1] + 1
            thr = np.minimum(VOC_IOU, w * h / ((w + ILSVRC_PIXEL_TOLERANCE) * (h + ILSVRC_PIXEL_TOLERANCE)))
        for row, d in zip(ov, sel):
            if rule == "ilsvrc":
                cand = np.where((row >= thr) & ~matched[i], row, -np.inf)
                j = int(np.argmax(cand))
                hit = cand[j] > -np.inf
            else:
                j = int(np.argmax(row))  # the first of the largest overlaps, as the devkit's strict ">"
                hit = row[j] >= VOC_IOU
            if not hit:
                fp[d] = 1
            elif gdiff[j]:
                pass  # difficult: neither true nor false positive
            elif not matched[i][j]:
                tp[d] = 1
                matched[i][j] = True
            else:
                fp[d] = 1  # a duplicate detection
    return tp, fp, npos


def pr_curve(dset: DetectionSet, dets: Detections, c: int, rule: str = "voc") -> tuple[np.ndarray, np.ndarray, int]:
    """(recall, precision, number of positives) of class c, one point per detection by decreasing score."""
    img_idx, boxes, _ = _class_detections(dset, dets, c)
    tp, fp, npos = _tp_fp(dset, c, img_idx, boxes, rule)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    with np.errstate(divide="ignore", invalid="ignore"):
        rec = tp / npos if npos else np.full(len(tp), np.nan)
        prec = np.nan_to_num(tp / (tp + fp), nan=0.0)
    return rec, prec, npos


def evaluate_voc(dset: DetectionSet, dets: Detections, rules: Sequence[str] = ("voc07", "voc12", "ilsvrc")):
    """{rule: {class: AP}} and the VOC PR curves {class: (recall, precision)}."""
    _check_detections(dset, dets)
    ap: dict[str, dict[str, float]] = {r: {} for r in rules}
    pr: dict[str, tuple[list, list]] = {}
    for c, name in enumerate(dset.classes):
        if "voc07" in rules or "voc12" in rules:
            rec, prec, npos = pr_curve(dset, dets, c, "voc")
            pr[name] = (rec.tolist(), prec.tolist())
            if "voc07" in rules:
                ap["voc07"][name] = voc07_ap(rec, prec) if npos else math.nan
            if "voc12" in rules:
                ap["voc12"][name] = voc12_ap(rec, prec) if npos else math.nan
        if "ilsvrc" in rules:
            rec, prec, npos = pr_curve(dset, dets, c, "ilsvrc")
            ap["ilsvrc"][name] = voc12_ap(rec, prec) if npos else math.nan
    return ap, pr


def coco_ground_truth(dset: DetectionSet) -> dict:
    """The set as a COCO instances dict (its category ids, bbox xywh in continuous pixels)."""
    images = [{"id": img.coco_id, "width": img.width, "height": img.height, "file_name": img.path.name}
              for img in dset.images]
    anns = []
    for img in dset.images:
        for box, label, diff in zip(img.boxes.tolist(), img.labels.tolist(), img.difficult.tolist()):
            x1, y1, x2, y2 = box
            anns.append({"id": len(anns) + 1, "image_id": img.coco_id, "category_id": dset.category_id(label),
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": int(diff)})
    cats = [{"id": dset.category_id(k), "name": name} for k, name in enumerate(dset.classes)]
    return {"images": images, "annotations": anns, "categories": cats}


def detection_rows(dset: DetectionSet, dets: Detections):
    """(image, [x1, y1, x2, y2], label, score) of every detection: images in the set's order, then the order given."""
    for img in dset.images:
        if img.image_id in dets:
            boxes, labels, scores = dets[img.image_id]
            for box, label, score in zip(np.asarray(boxes, np.float64).reshape(-1, 4).tolist(),
                                         np.asarray(labels).tolist(), np.asarray(scores).tolist()):
                yield img, box, label, score


def coco_results(dset: DetectionSet, dets: Detections) -> list[dict]:
    """Detections as COCO results (image_id, category_id, bbox [x, y, w, h], score) against coco_ground_truth."""
    return [{"image_id": img.coco_id, "category_id": dset.category_id(int(label)),
             "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)}
            for img, (x1, y1, x2, y2), label, score in detection_rows(dset, dets)]


def evaluate_coco(dset: DetectionSet, dets: Detections) -> dict:
    """{"coco_map", "coco_map50", "ap": {class: AP@[.5:.95]}, "pr50": {class: (recall, precision)}} by pycocotools."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _check_detections(dset, dets)
    results = coco_results(dset, dets)
    nan = math.nan
    if not any(len(img.boxes) for img in dset.images):
        return {"coco_map": nan, "coco_map50": nan, "ap": {c: nan for c in dset.classes}, "pr50": {}}
    if not results:  # pycocotools cannot load an empty result list; nothing detected scores 0
        return {"coco_map": 0.0, "coco_map50": 0.0, "ap": {c: 0.0 for c in dset.classes}, "pr50": {}}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = coco_ground_truth(dset)
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [nan if s < 0 else float(s) for s in ev.stats[:2]]
    precision = ev.eval["precision"]  # (T iou thresholds, R recall points, K classes, A areas, M max-dets)
    per_class, pr50 = {}, {}
    for k, name in enumerate(dset.classes):
        p = precision[:, :, k, 0, -1]
        per_class[name] = float(p[p > -1].mean()) if (p > -1).any() else nan
        if (p[0] > -1).any():
            pr50[name] = (list(map(float, ev.params.recThrs)), [max(float(v), 0.0) for v in p[0]])
    return {"coco_map": stats[0], "coco_map50": stats[1], "ap": per_class, "pr50": pr50}


def _mean(values: Iterable[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def evaluate_detections(dset: DetectionSet, dets: Detections, metrics: Sequence[str] = METRICS) -> dict:
    """Every metric that applies to the set: voc07_map, voc12_map, ilsvrc_map (VOC data), coco_map, coco_map50,
    per-class ``ap`` {metric: {class: AP}} and ``pr`` {"voc07": {class: (recall, precision)}} (COCO data: the PR
    curves at IoU 0.5 under "coco50")."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    out: dict = {"ap": {}, "pr": {}}
    voc_rules = [m for m in metrics if m != "coco"] if dset.kind == "voc" else []
    if voc_rules:
        ap, pr = evaluate_voc(dset, dets, voc_rules)
        for rule in voc_rules:
            out[f"{rule}_map"] = _mean(ap[rule].values())
            out["ap"][rule] = ap[rule]
        if pr:
            out["pr"]["voc07"] = pr
    if "coco" in metrics:
        coco = evaluate_coco(dset, dets)
        out["coco_map"], out["coco_map50"] = coco["coco_map"], coco["coco_map50"]
        out["ap"]["coco"] = coco["ap"]
        if dset.kind != "voc" or not voc_rules:
            out["pr"]["coco50"] = coco["pr50"]
    return out


def json_ready(value: Optional[object]):
    """NaN -> None (JSON has no NaN), recursively; tuples become lists."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value
