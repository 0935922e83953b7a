"""``googlenet predict``: the most probable classes of images, with the weights' own class names and preprocessing."""

from __future__ import annotations

import argparse
import json
import sys

from .common import add_inference_flags, add_weights_flag, load_ensemble, non_negative_int, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="top-k classes of images or folders of images",
                       description="Prints the top-k classes with their probabilities for every image named and "
                                   "every file under the folders named (recursively, sorted). Unreadable files are "
                                   "reported and skipped; the exit code is 2 only when no file could be read.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE|DIR")
    add_weights_flag(p, several=True)
    p.add_argument("--topk", type=positive_int, default=5, help="classes to show (clamped to the class count)")
    p.add_argument("--crops", choices=("1", "10", "144"), default="1", help="crop scheme (default 1)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="crops per forward pass")
    p.add_argument("--workers", type=non_negative_int, default=0, help="image-decoding processes (default 0)")
    add_inference_flags(p)
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..evaluate.predict import expand_inputs, predict_files

    ensemble = load_ensemble(args)
    files, errors = expand_inputs(args.inputs)
    predictions, bad = predict_files(ensemble, files, args.crops, topk=args.topk, batch_size=args.batch_size,
                                     workers=args.workers)
    errors += bad
    if args.json:
        print(json.dumps({"predictions": predictions, "errors": errors}))
    else:
        for p in predictions:
            print(p["image"])
            for t in p["topk"]:
                print(f"  {100 * t['prob']:6.2f}%  {t['label']} ({t['index']})")
        if predictions:  # with nothing readable, the one error line below says it all
            for e in errors:
                print(f"{e['image']}: skipped: {e['error']}", file=sys.stderr)
    if not predictions:
        print(f"googlenet predict: error: no readable image among {len(errors)} input(s)"
              + (f" (first: {errors[0]['image']}: {errors[0]['error']})" if errors else ""), file=sys.stderr)
        return 2
    return 0
