"""``googlenet shards``: an image folder (or the embedded set) -> WebDataset tar shards with a JSON index."""

from __future__ import annotations

import argparse
import sys

from .common import positive_float, positive_int, print_result


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shards", help="pack an image folder into WebDataset tar shards (train --data SHARDS)",
                       description="Writes OUT/<split>/NNNNNN.tar (KEY.jpg|png + KEY.cls) and OUT/index.json "
                                   "(classes, shards, counts) from DIR/train/<class>/* + DIR/val/<class>/*, "
                                   "a one-folder DIR/<class>/* (split as train splits it) or, without --data, "
                                   "the embedded Fashion-MNIST subset. The same input gives the same bytes.")
    p.add_argument("--data", help="image folder, or 'fashion-mnist' (default: the embedded subset)")
    p.add_argument("--out", required=True, metavar="SHARDS", help="output folder")
    p.add_argument("--shard-size", default="256MB", metavar="SIZE", help="bytes of images a shard (default 256MB)")
    p.add_argument("--resize", type=positive_int, metavar="PX",
                   help="shrink each image's shorter side to PX (decoding then keeps up with a GPU)")
    p.add_argument("--workers", type=positive_int, default=1, help="processes that read and encode images")
    p.add_argument("--val-fraction", type=positive_float, default=0.2, help="one-folder DIR: held-out share")
    p.add_argument("--json", action="store_true", help="print the index as one JSON line")


def run(args: argparse.Namespace) -> int:
    from ..data.shards import parse_size, write_shards
    from ..errors import UserError

    if not 0 < args.val_fraction < 1:
        raise UserError(f"--val-fraction must be between 0 and 1, got {args.val_fraction:g}")
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    index = write_shards(args.data, args.out, shard_bytes=parse_size(args.shard_size), resize=args.resize,
                         workers=args.workers, val_fraction=args.val_fraction, say=say)
    print_result(args.json, index, f"index: {args.out}/index.json ({len(index['classes'])} classes)")
    return 0
