"""``googlenet detect train``: the paper's R-CNN (default) or a Faster R-CNN on the GoogLeNet trunk, trained and
then evaluated on the held-out split. With no ``--data`` it makes the offline scene set (``googlenet scenes``) and
trains on it: the main detection job (``make detect``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .common import non_negative_int, positive_float, positive_int, print_result


def add_parser(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser("train", help="train a detector (R-CNN as the paper, or Faster R-CNN) and evaluate it",
                           description="Trains a detector on --data (a VOC year folder, or COCO instances JSON with "
                                       "--images), or with no --data on the generated offline scenes, then scores "
                                       "it on the held-out split (VOC07 / VOC2010+ / ILSVRC / COCO mAP) and writes "
                                       "detector.safetensors, results files, pr.png and drawn images to --out.")
    p.add_argument("--data", metavar="VOCDIR|JSON", help="training data (default: the offline scene set, made in "
                                                         "OUT/scenes)")
    p.add_argument("--images", metavar="DIR", help="COCO: the images folder (default: the JSON's folder)")
    p.add_argument("--test-data", metavar="VOCDIR|JSON", help="held-out data (default: --data with --test-split)")
    p.add_argument("--split", default="trainval", help="VOC training image set (default trainval)")
    p.add_argument("--test-split", default="test", help="VOC held-out image set (default test)")
    p.add_argument("--detector", choices=("rcnn", "faster-rcnn"), default="rcnn",
                   help="rcnn: the paper's (proposals + region classifier + SVMs; default); faster-rcnn: single pass")
    p.add_argument("--recipe", default=None, help="detection recipe: cpu (default), paper, or a .yaml file")
    p.add_argument("--init", default=None, metavar="W",
                   help="the classifier to start from: a weights file, bvlc, torchvision, or none (default)")
    p.add_argument("--arch", default=None, help="region classifier arch (default: the recipe's; cpu: googlenet_bn, paper: googlenet)")
    p.add_argument("--iterations", type=positive_int, default=None, help="fine-tuning steps (recipe's by default)")
    p.add_argument("--proposals", default=None, help="proposal method (recipe's by default: ss-fast2x)")
    p.add_argument("--scoring", choices=("svm", "softmax"), default=None, help="R-CNN's SVMs (default) or softmax")
    p.add_argument("--seed", type=non_negative_int, default=None)
    p.add_argument("--scenes-train", type=positive_int, default=240, metavar="N", help="offline scenes: trainval count")
    p.add_argument("--scenes-test", type=positive_int, default=120, metavar="N", help="offline scenes: test count")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default="runs/detect", metavar="RUN", help="run folder (default runs/detect)")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    g = p.add_argument_group("Faster R-CNN (--detector faster-rcnn; --recipe cpu, cpu_c4 or gpu: faster_<name>.yaml)")
    g.add_argument("--trunk", choices=("c4", "fpn"), default=None, help="backbone: C4 or FPN (recipe's: fpn)")
    g.add_argument("--epochs", type=positive_int, default=None, help="training epochs (--iterations caps the steps)")
    g.add_argument("--batch-size", type=positive_int, default=None, help="images a step")
    g.add_argument("--lr", type=positive_float, default=None, help="peak learning rate")
    g.add_argument("--min-size", type=positive_int, default=None, help="shorter image side fed to the network")
    g.add_argument("--max-size", type=positive_int, default=None, help="longer image side at most")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (the recipe's by default)")
    g.add_argument("--workers", type=non_negative_int, default=None, help="DataLoader processes")


# The flags that override a recipe, by their recipe key: R-CNN's (detect/recipe.py), Faster R-CNN's (faster/recipe.py).
RCNN_FLAGS = ("arch", "iterations", "proposals", "scoring", "seed")
FASTER_FLAGS = ("trunk", "epochs", "batch_size", "lr", "min_size", "max_size", "device", "workers", "arch", "seed")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..detect.metrics import evaluate_detections, json_ready
    from ..detect.report import run_detector, save_json, write_outputs
    from ..errors import UserError
    from ..fileio import ensure_dir, printable
    from ..detect.run import read_data
    from ..detect.metrics import MAP_KEYS
    from .detect_eval import format_table

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    # The recipe first: a bad one is refused before any scene is made or image read.
    if args.detector == "faster-rcnn":
        from ..detect.faster_rcnn import load_recipe, train_faster

        recipe = load_recipe(args.recipe or "cpu", {k: getattr(args, k) for k in FASTER_FLAGS})
    else:
        from ..detect.recipe import load_recipe
        from ..detect.train import train_rcnn

        recipe = load_recipe(args.recipe or "cpu", {k: getattr(args, k) for k in RCNN_FLAGS})
    out = ensure_dir(args.out)
    data, images, test_data = args.data, args.images, args.test_data
    if data is None:
        from ..detect.scenes import make_scenes

        if images or test_data:
            raise UserError("--images and --test-data go with --data")
        voc = make_scenes(out / "scenes", seed=0 if args.seed is None else args.seed, n_train=args.scenes_train,
                          n_test=args.scenes_test)
        _log(f"offline scenes: {args.scenes_train} trainval + {args.scenes_test} test in {printable(voc)}")
        data = voc
    train_set = read_data(data, args.split, images, None)
    test_set = read_data(test_data or data, args.test_split, images, train_set.classes)
    if test_data is None and Path(data).suffix.lower() == ".json":
        raise UserError("COCO data: give the held-out instances JSON with --test-data")
    _log(f"{len(train_set.images)} training images, {len(test_set.images)} held-out, classes: "
         f"{', '.join(train_set.classes)}")
    weights = out / "detector.safetensors"
    if args.detector == "faster-rcnn":
        detector = train_faster(train_set, recipe, args.init, args.iterations, _log)
        scorings = [None]
    else:
        detector = train_rcnn(train_set, recipe, args.init, _log)
        scorings = [recipe.scoring] + [s for s in ("svm", "softmax") if s != recipe.scoring]
    t_train = time.perf_counter() - t0
    # Floating-point sums split over threads round differently, so a run repeats bit for bit with the same seed
    # and the same thread count (tests/test_detect_cli.py), not across thread counts: the file says which it was.
    detector.extra.setdefault("training", {}).update(wall_s=round(t_train, 1), threads=torch.get_num_threads())
    detector.save(weights)
    _log(f"trained in {t_train:.0f} s: {printable(weights)}; scoring {len(test_set.images)} held-out images")
    dets, timings = run_detector(detector, test_set, scorings)
    main = scorings[0]
    metrics = evaluate_detections(test_set, dets[main])
    paths = write_outputs(out, test_set, dets[main], args.test_split, metrics, log=_log)
    print(format_table(metrics["ap"], test_set.classes))
    keys = [k for k in MAP_KEYS if k in metrics]
    result = {k: metrics[k] for k in keys}
    if len(scorings) > 1:  # R-CNN: the softmax-vs-SVM difference the paper's R-CNN measured (~3 mAP for SVMs)
        other = evaluate_detections(test_set, dets[scorings[1]])
        result[f"{scorings[1]}_voc07_map"] = other.get("voc07_map", other.get("coco_map50"))
    result.update({"weights": printable(weights), "detector": args.detector, "ap": metrics["ap"],
                   "scoring": main, "train_images": len(train_set.images), "test_images": len(test_set.images),
                   "classes": train_set.classes, "train_seconds": t_train, "seconds_per_image": timings,
                   "wall_s": time.perf_counter() - t0, **paths})
    if hasattr(detector, "extra"):
        result["training"] = detector.extra.get("training")
    save_json(out / "metrics.json", result)
    result = json_ready(result)
    print_result(args.json, result, "  ".join(f"{k} {result[k]:.4f}" for k in keys if result[k] is not None),
                 f"held-out VOC07 mAP {result.get('voc07_map') or 0:.4f}; detector {printable(weights)}; "
                 f"wall {result['wall_s']:.0f} s")
    return 0
