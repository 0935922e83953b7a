"""``googlenet detect eval``: VOC07 / VOC2010+ / ILSVRC / COCO mAP of detections on a VOC folder or COCO JSON.

The detections are either a results file set made elsewhere (``--detections``: a folder of VOC comp4 files, or a COCO
results JSON), scored without any model, or made here by one detector file or an ensemble (``--weights``, which
needs googlenet.detect.detector).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from .common import print_result


def add_parser(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser("eval", help="mAP (VOC07, VOC2010+, ILSVRC, COCO) of detections or of a detector",
                           description="Scores detections against a VOC year folder or COCO instances JSON: VOC07 "
                                       "11-point and VOC2010+ AP as the devkit, the ILSVRC DET rule, COCO "
                                       "AP@[.5:.95] and AP50 (pycocotools). Prints a per-class table; with --json "
                                       "the last line is one JSON object.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--detections", metavar="RESULTS",
                     help="a folder of VOC results files (comp4_det_<split>_<class>.txt) or a COCO results .json")
    src.add_argument("--weights", action="append", metavar="W",
                     help="a detector file (googlenet detect train); repeat for an ensemble")
    p.add_argument("--data", required=True, metavar="VOCDIR|JSON",
                   help="a VOC year folder (e.g. VOCdevkit/VOC2007) or COCO instances .json")
    p.add_argument("--images", metavar="DIR", help="COCO: the images folder (default: the JSON's folder)")
    p.add_argument("--split", default="test", help="VOC image set to score (default test)")
    p.add_argument("--classes", metavar="A,B,...",
                   help="VOC class names in label order (default: the detector's, else the sorted names of the "
                        "trainval split, else of --split)")
    p.add_argument("--plots", metavar="DIR", help="write the precision-recall curves (pr.png) here")
    p.add_argument("--write-results", metavar="DIR",
                   help="with --weights: also write the detections as VOC results files and COCO results JSON")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")


def _classes(args: argparse.Namespace, detector_classes):
    from ..detect.data import read_voc

    if args.classes:
        return [c.strip() for c in args.classes.split(",") if c.strip()]
    if detector_classes is not None:
        return list(detector_classes)
    data = Path(args.data)
    if data.is_dir() and args.split != "trainval" and (data / "ImageSets" / "Main" / "trainval.txt").exists():
        return read_voc(data, "trainval").classes
    return None


def format_table(ap: dict, classes) -> str:
    rules = list(ap)
    rows = [["class"] + rules]
    for c in classes:
        rows.append([c] + ["-" if ap[r].get(c) is None or math.isnan(ap[r][c]) else f"{ap[r][c]:.4f}" for r in rules])
    width = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if k == 0 else cell.rjust(w) for k, (cell, w) in
                               enumerate(zip(r, width))) for r in rows)


def run(args: argparse.Namespace) -> int:
    from ..detect.metrics import MAP_KEYS, evaluate_detections, json_ready
    from ..detect.run import load_detectors, read_data, run_detector
    from ..errors import UserError
    from ..fileio import printable

    detector = load_detectors(args.weights) if args.weights else None
    classes = _classes(args, getattr(detector, "classes", None))
    dset = read_data(args.data, args.split, args.images, classes)
    if detector is not None and list(detector.classes) != dset.classes:
        raise UserError(f"the detector's classes ({', '.join(detector.classes)}) are not the data's "
                        f"({', '.join(dset.classes)})")
    timings = None
    if detector is not None:
        dets, timings = run_detector(detector, dset)
        if args.write_results:
            from ..detect.results import write_coco_results, write_voc_results

            if dset.kind == "voc":
                write_voc_results(args.write_results, dset, dets, args.split)
            write_coco_results(Path(args.write_results) / "coco_results.json", dset, dets)
    else:
        if args.write_results:
            raise UserError("--write-results goes with --weights (--detections are results already)")
        from ..detect.results import read_detections

        dets = read_detections(args.detections, dset, args.split if dset.kind == "voc" else None)
    out = evaluate_detections(dset, dets)
    if args.plots:
        from ..detect.report import plot_metrics_pr

        plot_metrics_pr(out, dset, Path(args.plots) / "pr.png")
    print(format_table(out["ap"], dset.classes))
    keys = [k for k in MAP_KEYS if k in out]
    result = {k: out[k] for k in keys}
    result.update({"ap": out["ap"], "data": printable(args.data), "split": args.split if dset.kind == "voc" else None,
                   "images": len(dset.images), "detections": int(sum(len(d[0]) for d in dets.values())),
                   "classes": dset.classes})
    if timings is not None:
        result["seconds_per_image"] = timings
    if args.plots:
        result["plots"] = printable(Path(args.plots) / "pr.png")
    result = json_ready(result)
    print_result(args.json, result, "  ".join(f"{k} {'-' if result[k] is None else format(result[k], '.4f')}"
                                              for k in keys))
    return 0
