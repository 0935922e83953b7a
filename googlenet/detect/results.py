"""Detections in the formats people exchange: PASCAL VOC results files and COCO results JSON, written and read.

VOC (the devkit's comp3/comp4 "det" files): one file per class, ``comp4_det_<split>_<class>.txt``, one detection a
line: ``<image id> <score> <xmin> <ymin> <xmax> <ymax>`` in VOC pixels (1-based, both ends included; the project's
0-based continuous box (x1, y1, x2, y2) is written as x1 + 1, y1 + 1, x2, y2). comp4 is the devkit's name for
methods trained on other data than VOC's own, comp3 for VOC data only; both read the same.
COCO: a JSON list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``, image ids and category ids
those of the data (for VOC data: the image's 1-based position in the split, classes 1..C).

Writing lists images in the set's order and, within an image, detections in the order given, which is the order the
VOC evaluator breaks score ties by (googlenet.detect.metrics). Reading refuses a bad row with its file and line (a
COCO entry with its position in the list), as one ``UserError``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import UserError, one_line
from ..fileio import atomic_write_text, ensure_dir, printable
from .data import DetectionSet, read_text
from .metrics import Detections, coco_results, detection_rows

_VOC_NAME = re.compile(r"comp(\d+)_det_(.+)\.txt")


def _num(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def voc_results_name(split: str, cls: str, comp: str = "comp4") -> str:
    return f"{comp}_det_{split}_{cls}.txt"


def write_voc_results(folder: str | Path, dset: DetectionSet, dets: Detections, split: str,
                      comp: str = "comp4") -> list[Path]:
    """One file per class (an empty one for a class with no detections); returns the paths."""
    folder = ensure_dir(folder)
    lines: list[list[str]] = [[] for _ in dset.classes]
    for img, (x1, y1, x2, y2), label, score in detection_rows(dset, dets):
        box = " ".join(_num(v) for v in (x1 + 1, y1 + 1, x2, y2))
        lines[int(label)].append(f"{img.image_id} {score:.7g} {box}\n")
    paths = []
    for cls, rows in zip(dset.classes, lines):
        path = folder / voc_results_name(split, cls, comp)
        atomic_write_text(path, "".join(rows))
        paths.append(path)
    return paths


def _voc_files(folder: Path, dset: DetectionSet, split: Optional[str]) -> dict[int, Path]:
    """Class index -> its results file in ``folder`` (for ``split``, or the one split the folder holds)."""
    found: dict[int, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        m = _VOC_NAME.fullmatch(path.name)
        if not m:
            continue
        rest = m.group(2)  # "<split>_<class>"; class names may hold underscores, so match the known ones
        for c, cls in enumerate(dset.classes):
            if rest.endswith("_" + cls) and (split is None or rest == f"{split}_{cls}"):
                found.setdefault(c, []).append(path)
    if not found:
        want = voc_results_name(split or "<split>", "<class>", "comp4")
        raise UserError(f"no VOC results files ({want}) for the classes {', '.join(dset.classes)} in "
                        f"{printable(folder)}")
    for c, paths in found.items():
        if len(paths) > 1:
            raise UserError(f"several results files for class {dset.classes[c]!r} in {printable(folder)} "
                            f"({', '.join(p.name for p in paths[:3])}); name the split")
    return {c: paths[0] for c, paths in found.items()}


def read_voc_results(folder: str | Path, dset: DetectionSet, split: Optional[str] = None) -> Detections:
    """The detections in a folder of VOC results files; a class without a file has no detections."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"VOC results folder not found: {printable(folder)}")
    known = {img.image_id for img in dset.images}
    per_image: dict[str, list[tuple[list[float], int, float]]] = {}
    for c, path in sorted(_voc_files(folder, dset, split).items()):
        for n, line in enumerate(read_text(path, "results file").splitlines(), 1):
            if not line.strip():
                continue
            where = f"results file {printable(path)} line {n}"
            parts = line.split()
            if len(parts) != 6:
                raise UserError(f"{where}: expected 'image score xmin ymin xmax ymax', got {len(parts)} fields")
            image_id = parts[0]
            try:
                score, x1, y1, x2, y2 = (float(v) for v in parts[1:])
            except ValueError:
                raise UserError(f"{where}: score and box must be numbers") from None
            if not all(math.isfinite(v) for v in (score, x1, y1, x2, y2)):
                raise UserError(f"{where}: score and box must be finite numbers")
            if x2 < x1 or y2 < y1:
                raise UserError(f"{where}: xmax < xmin or ymax < ymin")
            if image_id not in known:
                raise UserError(f"{where}: image {image_id!r} is not in {dset.name}")
            per_image.setdefault(image_id, []).append(([x1 - 1, y1 - 1, x2, y2], c, score))
    return _pack(per_image)


def _pack(per_image: dict) -> Detections:
    out: Detections = {}
    for image_id, rows in per_image.items():
        out[image_id] = (np.array([r[0] for r in rows], np.float32).reshape(-1, 4),
                         np.array([r[1] for r in rows], np.int64), np.array([r[2] for r in rows], np.float64))
    return out


def write_coco_results(path: str | Path, dset: DetectionSet, dets: Detections) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps(coco_results(dset, dets)) + "\n")
    return path


def read_coco_results(path: str | Path, dset: DetectionSet) -> Detections:
    """The detections in a COCO results JSON for ``dset`` (its image and category ids)."""
    path = Path(path)
    where = f"COCO results {printable(path)}"
    try:
        doc = json.loads(read_text(path, "COCO results"))
    except (ValueError, RecursionError) as e:
        raise UserError(f"{where}: not JSON ({one_line(e, 200)})") from None
    if not isinstance(doc, list):
        raise UserError(f"{where}: expected a JSON list of detections")
    images = {img.coco_id: img.image_id for img in dset.images}
    cats = {dset.category_id(k): k for k in range(len(dset.classes))}
    per_image: dict[str, list] = {}
    for n, d in enumerate(doc):
        at = f"{where} entry {n}"
        if not isinstance(d, dict):
            raise UserError(f"{at}: expected an object with image_id, category_id, bbox, score")
        try:
            iid, cid = d["image_id"], d["category_id"]
            x, y, w, h = (float(v) for v in d["bbox"])
            score = float(d["score"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{at}: needs image_id, category_id, bbox [x, y, w, h] and score, as numbers") from None
        if not all(math.isfinite(v) for v in (x, y, w, h, score)) or w < 0 or h < 0:
            raise UserError(f"{at}: bbox and score must be finite, width and height >= 0")
        if not isinstance(iid, int) or iid not in images:
            raise UserError(f"{at}: image_id {iid!r} is not in {dset.name}")
        if not isinstance(cid, int) or cid not in cats:
            raise UserError(f"{at}: unknown category_id {cid!r}")
        per_image.setdefault(images[iid], []).append(([x, y, x + w, y + h], cats[cid], score))
    return _pack(per_image)


def read_detections(results: str | Path, dset: DetectionSet, split: Optional[str] = None) -> Detections:
    """A folder of VOC results files or a COCO results .json."""
    results = Path(results)
    if results.is_dir():
        return read_voc_results(results, dset, split)
    if results.suffix.lower() == ".json":
        return read_coco_results(results, dset)
    if not results.exists():
        raise UserError(f"detections not found: {printable(results)}")
    raise UserError(f"detections {printable(results)}: expected a folder of VOC results files or a COCO results .json")
