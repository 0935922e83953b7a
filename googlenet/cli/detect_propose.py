"""``googlenet detect propose --data ... --split S --method M [--weights W] [--json] [--plot PNG]``: box recall of
region proposals at IoU 0.5 and 0.7 against the number of proposals per image, per method, with a recall plot."""

from __future__ import annotations

import argparse
import json

from .common import positive_int

COUNTS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


def add_parser(actions: argparse._SubParsersAction) -> None:
    from ..detect.proposals import METHODS

    p = actions.add_parser("propose", help="region proposals and their recall (selective search, MultiBox, union)",
                           description="Computes class-agnostic proposals for every image of a split (cached on "
                                       "disk) and prints the recall of the ground-truth boxes at IoU 0.5 and 0.7 "
                                       "against the number of proposals per image.")
    p.add_argument("--data", required=True, metavar="VOCDIR|JSON")
    p.add_argument("--images", metavar="DIR", help="COCO: the images folder")
    p.add_argument("--split", default="test")
    p.add_argument("--method", action="append", choices=METHODS, metavar="METHOD",
                   help=f"one of {', '.join(METHODS)}; repeat to compare (default ss-fast2x)")
    p.add_argument("--weights", metavar="W", help="a detector file with a MultiBox (for the multibox methods)")
    p.add_argument("--max", type=positive_int, default=2000, help="proposals per image at most (default 2000)")
    p.add_argument("--plot", metavar="PNG", help="write the recall-vs-proposals curves here")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..detect.data import load_rgb
    from ..detect.proposals import box_recall, propose
    from ..errors import UserError
    from ..detect.run import read_data

    methods = args.method or ["ss-fast2x"]
    multibox = None
    if any("multibox" in m for m in methods):
        if not args.weights:
            raise UserError("the multibox methods need --weights (a detector trained with MultiBox proposals)")
        from ..detect.detector import RCNNDetector

        multibox = RCNNDetector.from_file(args.weights).multibox
        if multibox is None:
            raise UserError(f"{args.weights} has no MultiBox (train with --proposals ss-fast2x+multibox)")
    dset = read_data(args.data, args.split, args.images, None)
    gts = [img.boxes[~img.difficult] for img in dset.images]
    curves, summary = {}, {}
    for m in methods:
        props = [propose(load_rgb(img), m, args.max, multibox) for img in dset.images]
        per_image = float(np.mean([len(p) for p in props])) if props else 0.0
        counts = [c for c in COUNTS if c < args.max] + [args.max]
        rec = box_recall(props, gts, counts)
        curves[f"{m} IoU 0.5"] = (counts, rec[0.5])
        curves[f"{m} IoU 0.7"] = (counts, rec[0.7])
        summary[m] = {"recall50": rec[0.5][-1], "recall70": rec[0.7][-1], "proposals_per_image": per_image,
                      "counts": counts, "recall50_at": rec[0.5], "recall70_at": rec[0.7]}
        print(f"{m}: {per_image:.0f} proposals an image; recall {rec[0.5][-1]:.4f} at IoU 0.5, "
              f"{rec[0.7][-1]:.4f} at IoU 0.7")
    if args.plot:
        from ..detect.draw import plot_recall

        plot_recall(curves, args.plot, ylabel="recall")
    first = summary[methods[0]]
    result = {"method": methods[0], "recall50": first["recall50"], "recall70": first["recall70"],
              "proposals_per_image": first["proposals_per_image"], "images": len(dset.images),
              "boxes": int(sum(len(g) for g in gts)), "methods": summary}
    if args.json:
        print(json.dumps(result))
    return 0
