"""``googlenet summary``: Table 1 computed from the model."""

from __future__ import annotations

import argparse
import json

from ..errors import UserError
from .common import check_arch, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="Table 1 computed from the model, beside the paper's printed values",
                       description="Prints one row per Table 1 row: patch/stride, output, branch widths, weights, "
                                   "biases and multiply-adds, all measured on the built model, with the paper's "
                                   "printed params/ops beside them and the rows that differ flagged.")
    p.add_argument("--arch", default="googlenet", help="architecture (see 'googlenet.list_models()')")
    p.add_argument("--input-size", type=positive_int, default=224, help="square input side (>= 64)")
    p.add_argument("--num-classes", type=positive_int, default=1000)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..summary import format_table, summarize

    check_arch(args.arch)
    if args.input_size < 64:
        raise UserError(f"--input-size must be at least 64, got {args.input_size}")
    if args.input_size > 2048:
        raise UserError(f"--input-size must be at most 2048, got {args.input_size}")
    s = summarize(args.arch, args.input_size, args.num_classes)
    print(json.dumps(s) if args.json else format_table(s))
    return 0
