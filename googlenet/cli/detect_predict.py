"""``googlenet detect predict IMAGE_OR_DIR --weights W [--weights W2 ...] [--draw OUTDIR] [--json]``: boxes,
classes and scores per image, from one detector file or an ensemble, optionally drawn on the images."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser("predict", help="detect objects in images with a detector file (or an ensemble)",
                           description="Runs a detector (googlenet detect train) on an image or a folder of images "
                                       "and prints the boxes (0-based pixel xyxy), classes and scores.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--weights", action="append", required=True, metavar="W",
                   help="a detector file; repeat for an ensemble (R-CNN)")
    p.add_argument("--min-score", type=float, default=None,
                   help="drop boxes scoring below this (default: keep what the detector keeps)")
    p.add_argument("--top", type=int, default=20, help="at most this many boxes an image (default 20)")
    p.add_argument("--draw", metavar="OUTDIR", help="write each image with its boxes drawn here")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..data.images import BadImage, load_image
    from ..evaluate.predict import expand_inputs
    from ..detect.detector import load_ensemble
    from ..errors import UserError
    from ..fileio import atomic_path, ensure_dir, printable

    if args.top < 1:
        raise UserError("--top must be at least 1")
    detector = load_ensemble(args.weights)
    paths, errors = expand_inputs(args.inputs)
    for e in errors:
        print(f"googlenet detect predict: skipped {e['image']}: {e['error']}", file=sys.stderr)
    out_dir = ensure_dir(args.draw) if args.draw else None
    results, failed = [], len(errors)
    for path in paths:
        try:
            rgb = np.ascontiguousarray(load_image(path).permute(1, 2, 0).numpy())
        except BadImage as e:
            print(f"googlenet detect predict: skipped {printable(path)}: {e}", file=sys.stderr)
            failed += 1
            continue
        boxes, labels, scores = detector.detect(rgb)
        keep = np.argsort(-scores, kind="stable")[: args.top]
        if args.min_score is not None:
            keep = keep[scores[keep] >= args.min_score]
        boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
        item = {"image": printable(path), "width": int(rgb.shape[1]), "height": int(rgb.shape[0]),
                "detections": [{"box": [round(float(v), 2) for v in b], "class": detector.classes[int(c)],
                                "label": int(c), "score": round(float(s), 5)} for b, c, s in zip(boxes, labels, scores)]}
        if out_dir is not None:
            from ..detect.draw import draw_boxes

            target = out_dir / (Path(path).stem + ".jpg")
            with atomic_path(target) as tmp:
                draw_boxes(rgb, boxes, labels, scores, detector.classes).save(tmp, "JPEG", quality=92)
            item["drawn"] = printable(target)
        results.append(item)
        if not args.json:
            best = ", ".join(f"{d['class']} {d['score']:.2f}" for d in item["detections"][:5]) or "nothing"
            print(f"{item['image']}: {len(item['detections'])} boxes; best {best}")
    if not results:
        raise UserError(f"no readable image among {len(paths) + len(errors)} inputs")
    if args.json:
        print(json.dumps({"images": results, "skipped": failed, "classes": detector.classes}))
    return 0
