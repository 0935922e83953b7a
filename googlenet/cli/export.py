"""``googlenet export``: weights -> ONNX (onnx.checker + ONNX Runtime comparison) or TorchScript (reload + compare)."""

from __future__ import annotations

import argparse
import sys

from .common import add_weights_flag, positive_int, print_result


def batch_arg(text: str):
    if text == "dynamic":
        return text
    return positive_int(text, "'dynamic' or a positive integer")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export weights to ONNX or TorchScript, checked against PyTorch",
                       description="Exports the inference graph (images -> logits; aux heads left out). The exported "
                                   "file is run on random batches (1 and 3 for a dynamic batch) and compared with "
                                   "PyTorch; beyond 1e-4 max abs difference the command fails and writes nothing.")
    add_weights_flag(p)
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (11-20, default 17)")
    p.add_argument("--batch", type=batch_arg, default="dynamic", help="'dynamic' (default) or a fixed batch size")
    p.add_argument("--input-size", type=int, default=None,
                   help="square input side (64-2048; default: the weights' preprocessing input_size)")
    p.add_argument("--dynamo", action="store_true", help="use torch.export's ONNX exporter (opset >= 18)")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..export import MAX_INPUT_SIZE, MIN_INPUT_SIZE, PIP_HINT, check_opset, export, require_onnx
    from ..pretrained import load_weights_arg

    # Flags first, so a bad flag costs nothing (no weights loaded, no download).
    if args.input_size is not None and not MIN_INPUT_SIZE <= args.input_size <= MAX_INPUT_SIZE:
        raise UserError(f"--input-size must be in [{MIN_INPUT_SIZE}, {MAX_INPUT_SIZE}], got {args.input_size}")
    if args.format == "onnx":
        check_opset(args.opset, args.dynamo)
        require_onnx()
    elif args.opset is not None or args.dynamo:
        raise UserError("--opset and --dynamo apply to --format onnx only")
    report = export(load_weights_arg(args.weights), args.out, format=args.format, input_size=args.input_size,
                    batch=args.batch, opset=args.opset, dynamo=args.dynamo)
    info = {"output": str(report.path), "format": report.format, "input_size": report.input_size,
            "batch": report.batch, "opset": report.opset, "checked_batches": list(report.checked_batches),
            "max_abs_diff": report.max_abs_diff}
    if report.max_abs_diff is None:
        print(f"onnxruntime is not installed, so the export was not compared with PyTorch: {PIP_HINT}", file=sys.stderr)
    checked = ("not compared" if report.max_abs_diff is None else
               f"max abs difference vs PyTorch {report.max_abs_diff:.2e} over batches "
               f"{', '.join(map(str, report.checked_batches))}")
    opset = "" if report.opset is None else f", opset {report.opset}"
    print_result(args.json, info, f"wrote {report.path} ({report.format}, input {report.input_size}x"
                                  f"{report.input_size}, batch {report.batch}{opset}): {checked}")
    return 0
