"""Tiny VOC year folders and COCO JSON files written on the fly for the detection tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def voc_xml(filename: str, w: int, h: int, objects) -> str:
    """objects: (name, xmin, ymin, xmax, ymax[, difficult]) in VOC 1-based pixels (any value is written as is)."""
    parts = [f"<annotation><folder>VOC2007</folder><filename>{filename}</filename>"
             f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"]
    for o in objects:
        name, x1, y1, x2, y2 = o[:5]
        diff = o[5] if len(o) > 5 else 0
        parts.append(f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                     f"<difficult>{diff}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                     f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>"


def make_voc(root: Path, images: dict, splits: dict | None = None) -> Path:
    """images: {image_id: (w, h, objects)}; splits: {split: [ids]} (default: every id in "trainval" and "test")."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for image_id, (w, h, objects) in images.items():
        rng = np.random.default_rng(sum(image_id.encode()))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{image_id}.jpg")
        (root / "Annotations" / f"{image_id}.xml").write_text(voc_xml(f"{image_id}.jpg", w, h, objects))
    for split, ids in (splits or {"trainval": list(images), "test": list(images)}).items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def make_coco(path: Path, images_dir: Path, images: dict, categories: list[tuple[int, str]],
              annotations: list[dict]) -> Path:
    """images: {id: (file_name, w, h)}; the image files are written into images_dir."""
    images_dir.mkdir(parents=True, exist_ok=True)
    for iid, (fname, w, h) in images.items():
        Image.new("RGB", (w, h), (iid * 40 % 255, 100, 50)).save(images_dir / fname)
    doc = {"images": [{"id": i, "file_name": f, "width": w, "height": h} for i, (f, w, h) in images.items()],
           "categories": [{"id": c, "name": n} for c, n in categories],
           "annotations": annotations}
    path.write_text(json.dumps(doc))
    return path
