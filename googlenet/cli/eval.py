"""``googlenet eval``: top-1 / top-5 with the paper's 1, 10 or 144 crops, one model or an ensemble; Table 3 grid."""

from __future__ import annotations

import argparse

from .common import add_inference_flags, add_weights_flag, load_ensemble, non_negative_int, positive_int, print_result


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="top-1/top-5 with 1, 10 or 144 crops (paper section 7), ensembles, Table 3",
                       description="Softmax probabilities are averaged over the crops of each image, then over the "
                                   "models given (an ensemble). Without --data: the embedded Fashion-MNIST held-out "
                                   "part. Under torchrun each rank scores its share and the counts are summed.")
    add_weights_flag(p, several=True)
    p.add_argument("--data", default=None, help="DIR/val/<class>/... or DIR/<class>/..., or 'fashion-mnist'; "
                                                "default: the embedded held-out part")
    p.add_argument("--crops", choices=("1", "10", "144"), default="1", help="crop scheme (default 1)")
    p.add_argument("--report", action="store_true",
                   help="the paper's Table 3 grid: 1..n models x 1/10/144 crops, error and cost; plus per-class "
                        "accuracy and the confusion matrix (CSV and PNG) in --report-dir")
    p.add_argument("--report-dir", default="eval_report", metavar="DIR",
                   help="where --report writes per_class.csv, confusion.csv, confusion.png (default eval_report)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="crops per forward pass (default 64)")
    p.add_argument("--workers", type=non_negative_int, default=None,
                   help="image-decoding processes (default 0 for the embedded data, 2 for a folder)")
    p.add_argument("--max-images", type=positive_int, default=None,
                   help="score only this many images, spread evenly over the set")
    add_inference_flags(p)
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..evaluate.evaluate import distributed, eval_source, evaluate, format_report, spread

    ensemble = load_ensemble(args)
    base, name = eval_source(args.data, ensemble)
    workers = args.workers if args.workers is not None else (0 if args.data is None else 2)
    schemes = ("1", "10", "144") if args.report else (args.crops,)
    result = evaluate(ensemble, base, schemes, indices=spread(len(base), args.max_images),
                      batch_size=args.batch_size, workers=workers, confusion_scheme=args.crops if args.report else None)
    rank, world = distributed()
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    if rank != 0:
        return 0
    out = {**result.summary(args.crops), "data": name, "weights": args.weights, "world_size": world}
    if args.report:
        out["report"] = [result.row(k, s) for k in range(1, result.models + 1) for s in schemes]
        print(format_report(result))
        if result.confusion is not None:
            from ..evaluate.confusion import write_report

            names = ensemble.class_names or [str(i) for i in range(result.confusion.shape[0])]
            rep = write_report(result.confusion, names, args.report_dir,
                               f"{name}: {out['images']} images, {args.crops} crop(s)")
            out.update(per_class=rep["classes"], per_class_csv=rep["per_class"], confusion_csv=rep["confusion_csv"],
                       confusion_png=rep["confusion_png"])
            if not args.json:
                print("per-class top-1:")
                for r in rep["classes"]:
                    acc = f"{100 * r['accuracy']:6.2f}%" if r["accuracy"] is not None else "   n/a"
                    print(f"  {r['class']:<24} {acc} of {r['images']:>5}"
                          + (f"  (most often taken for {r['most_confused_with']})" if r["most_confused_with"] else ""))
                print(f"confusion matrix: {rep['confusion_csv']}, {rep['confusion_png']}; per class: "
                      f"{rep['per_class']}")
    print_result(args.json, out,
                 f"{name}: {out['images']} images, {out['crops']} crops, {out['models']} model(s): "
                 f"top-1 {100 * out['top1']:.2f}% (error {100 * out['top1_err']:.2f}%), "
                 f"top-5 {100 * out['top5']:.2f}% (error {100 * out['top5_err']:.2f}%)",
                 *([f"skipped {len(result.skipped)} unreadable file(s):"] if result.skipped else []),
                 *(f"  {s['file']}: {s['error']}" for s in result.skipped))
    if result.images == 0:
        raise UserError(f"no readable image in {name} ({len(result.skipped)} file(s) skipped)")
    return 0
