"""``googlenet bench infer|train|data|serve|lrn``: the project's fast paths beside the references, in one process."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import UserError
from .common import check_arch, positive_int

PRECISION_CHOICES = ("fp32", "bf16", "int8")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time the project's inference / training / data paths beside torchvision "
                                     "and ONNX Runtime",
                       description="Runs the project's paths and the references in one process, alternating them "
                                   "round by round after a warm-up, and prints the median and spread of each. "
                                   "Compare ratios within one run: absolute figures drift with the machine's load.")
    p.add_argument("what", choices=("infer", "train", "data", "serve", "lrn", "detect"), help="which path to time")
    p.add_argument("--arch", default="googlenet_tv", help="project architecture (random weights) when no --weights")
    p.add_argument("--weights", help="infer: a weights file (a model trained on the embedded set gives the "
                                     "top-1 agreement of bf16 / int8 with fp32) or 'torchvision'")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per call (default 32; data: --files per round)")
    p.add_argument("--input-size", type=positive_int, default=224, help="square input side (>= 64)")
    p.add_argument("--precision", nargs="+", choices=PRECISION_CHOICES, default=None,
                   help="project precisions to time (default: infer fp32 bf16 int8, train fp32 bf16)")
    p.add_argument("--rounds", type=positive_int, default=5, help="timed rounds after the warm-up")
    p.add_argument("--compile", action="store_true", help="also time torch.compile paths (minutes to compile)")
    p.add_argument("--no-latency", dest="latency", action="store_false", help="infer: skip the batch-1 rows")
    p.add_argument("--threads", type=positive_int, default=None, help="intra-op threads for PyTorch and ONNX Runtime "
                   "alike (default: PyTorch's, one per core); 1 gives steadier figures on a machine other jobs share")
    p.add_argument("--files", type=positive_int, default=64, help="data: JPEGs per round")
    p.add_argument("--source-size", type=source_size, default=(500, 375), metavar="WxH",
                   help="data: the generated JPEGs' size (default 500x375, ImageNet's typical photo)")
    serve = p.add_argument_group("serve (load test with hey against 127.0.0.1)")
    serve.add_argument("--image", help="serve: the image every request sends (default: a held-out Fashion-MNIST one)")
    serve.add_argument("--concurrency", type=positive_int, nargs="+", default=[1, 4, 16])
    serve.add_argument("--requests", type=positive_int, default=200, help="serve: requests per concurrency level")
    serve.add_argument("--max-batch", type=positive_int, default=8, help="serve: --max-batch of the batching run")
    serve.add_argument("--max-wait-ms", type=float, default=5.0)
    serve.add_argument("--backend", default="onnxruntime", help="serve: the server's backend (default onnxruntime)")
    serve.add_argument("--abuse", type=int, default=50, help="serve: hostile requests during the top level (0: none)")
    det = p.add_argument_group("detect (detectors side by side on the same held-out images)")
    det.add_argument("--detectors", nargs="+", metavar="FILE[,FILE...]",
                     help="detect: detector files (googlenet detect train); commas join an R-CNN ensemble")
    det.add_argument("--data", help="detect: the held-out VOC year folder or COCO instances JSON")
    det.add_argument("--split", default="test", help="detect: the VOC image set (default test)")
    det.add_argument("--images", help="detect, COCO JSON: the images folder")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")


def source_size(text: str) -> tuple[int, int]:
    """'WxH' -> (W, H), each 16..8192 (a generated test photo, not a memory test)."""
    w, sep, h = text.lower().partition("x")
    try:
        size = (int(w), int(h)) if sep else None
    except ValueError:
        size = None
    if size is None or not all(16 <= v <= 8192 for v in size):
        raise argparse.ArgumentTypeError(f"expected WxH with sides 16..8192, e.g. 1000x750, got {text!r}")
    return size


def run(args: argparse.Namespace) -> int:
    from ..bench.common import format_table, machine, versions

    if not 64 <= args.input_size <= 2048:
        raise UserError(f"--input-size must be in [64, 2048], got {args.input_size}")

    def progress(message: str) -> None:
        print(f"bench {args.what}: {message}", file=sys.stderr, flush=True)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # ONNX Runtime sessions take torch.get_num_threads() too
    batch_size = args.batch_size or 32
    extra = {}  # serve: what its JSON adds to the rows and notes
    if args.what == "infer":
        from ..bench.infer import bench_infer

        if args.weights:
            from ..pretrained import load_weights_arg

            model, trained = load_weights_arg(args.weights), args.weights != "torchvision"
        else:  # a fresh --arch with 1000 classes, as the references
            from ..models import create_model

            model, trained = create_model(check_arch(args.arch), num_classes=1000).eval(), False
        rows, notes = bench_infer(model=model, batch_size=batch_size, input_size=args.input_size,
                                  precisions=args.precision or PRECISION_CHOICES, rounds=args.rounds,
                                  latency=args.latency, compile=args.compile, trained=trained, progress=progress)
    elif args.what == "train":
        from ..bench.train import bench_train

        check_arch(args.arch)
        if "int8" in (args.precision or ()):
            raise UserError("bench train: --precision int8 is inference-only; use fp32 and/or bf16")
        rows, notes = bench_train(arch=args.arch, batch_size=batch_size, input_size=args.input_size,
                                  precisions=args.precision or ("fp32", "bf16"), rounds=args.rounds,
                                  compile=args.compile, progress=progress)
    elif args.what == "serve":
        from ..bench.serve import bench_serve

        if not args.weights:
            raise UserError("bench serve needs --weights (the file the server serves)")
        rows, notes, extra = bench_serve(weights=args.weights, image=args.image, concurrency=args.concurrency,
                                         requests=args.requests, max_batch=args.max_batch,
                                         max_wait_ms=args.max_wait_ms, precision=(args.precision or ["fp32"])[0],
                                         backend=args.backend, abuse=args.abuse, progress=progress)
    elif args.what == "lrn":
        from ..bench.lrn import bench_lrn, bench_lrn_net

        kwargs = dict(batch_size=batch_size, input_size=args.input_size, rounds=args.rounds, progress=progress)
        rows, notes = bench_lrn(**kwargs)
        if args.compile:
            net_rows, net_notes = bench_lrn_net(**kwargs)
            rows, notes = rows + net_rows, notes + net_notes
    elif args.what == "detect":
        from ..bench.detect import bench_detect

        if not args.detectors or not args.data:
            raise UserError("bench detect needs --detectors FILE [FILE,FILE ...] and --data (the held-out set)")
        rows, notes = bench_detect(args.detectors, args.data, args.split, args.images, progress=progress)
    else:
        from ..bench.data import bench_data

        rows, notes = bench_data(input_size=args.input_size, files=args.batch_size or args.files,
                                 rounds=args.rounds, image_size=args.source_size, progress=progress)
    if args.json:
        print(json.dumps({"benchmark": args.what, "machine": machine(), "versions": versions(), "results": rows,
                          "notes": notes, **extra}))
        return 0
    m = machine()
    threads = "" if args.what == "serve" else f" {m['threads']} threads,"
    print(f"{m['cpu']}, {m['cores']} cores,{threads} load {m['load_average']}")
    if args.what == "serve":
        from ..bench.serve import format_rows

        print(format_rows(rows), *notes, sep="\n")
        if extra["abuse"]:
            print("abuse:", json.dumps(extra["abuse"]))
    elif args.what == "detect":
        from ..bench.detect import format_detect_table

        print(format_detect_table(rows, notes))
    else:
        print(format_table(rows, notes))
    return 0
