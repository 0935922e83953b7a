"""``googlenet embed``: pooled features of images (default: the 1024-d features before the classifier) to .npz."""

from __future__ import annotations

import argparse
import sys

from .common import add_weights_flag, non_negative_int, positive_int, print_result


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="pooled features of an image or a folder (class folders give labels) to .npz",
                       description="Writes features (N x D float32), paths, labels (-1 without class folders), "
                                   "class_names, layer and weights to OUT (.npz), in chunks to OUT.partial/ first: "
                                   "rerun the same command to continue a run that was stopped. Unreadable files in "
                                   "a folder are reported and left out; see docs/finetuning.md.")
    p.add_argument("input", metavar="DIR|IMAGE")
    add_weights_flag(p)
    p.add_argument("--layer", metavar="NAME", help="module whose output is averaged over height and width (the "
                                                   "names 'googlenet layers' lists); default avgpool: 1024-d")
    p.add_argument("--out", required=True, metavar="FEATS.npz")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--workers", type=non_negative_int, default=0, help="image-decoding processes (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="default fp32")
    p.add_argument("--chunk", type=positive_int, default=4096,
                   help="images per saved chunk: the most a stopped run recomputes (default 4096)")
    p.add_argument("--restart", action="store_true", help="discard OUT.partial/ from an earlier run and start over")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..embedding import embed

    r = embed(args.input, args.weights, layer=args.layer, out=args.out, batch_size=args.batch_size,
              workers=args.workers, device=args.device, precision=args.precision, chunk=args.chunk,
              restart=args.restart, load_features=False)
    for s in r.skipped:
        print(f"{s['file']}: skipped: {s['error']}", file=sys.stderr)
    summary = {"out": args.out, "images": len(r.paths), "dim": r.dim, "layer": r.layer, "weights": r.weights,
               "classes": len(r.class_names), "skipped": len(r.skipped), "computed": r.computed,
               "resumed": r.resumed}
    resumed = f", {r.resumed} from the earlier partial run" if r.resumed else ""
    print_result(args.json, summary, f"{args.out}: {len(r.paths)} images x {r.dim} features ({r.layer}), "
                                     f"{len(r.class_names)} classes, {len(r.skipped)} skipped{resumed}")
    return 0
