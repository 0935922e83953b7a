"""``googlenet scenes``: the offline detection scene set (VOC folder + COCO JSON), deterministic from --seed."""

from __future__ import annotations

import argparse

from .common import non_negative_int, positive_int, print_result


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scenes", help="write the offline detection scene set (VOC2007 folder and COCO JSON)",
                       description="Generated scenes for detection: Fashion-MNIST items of six classes pasted at "
                                   "random scales and positions on real and procedural textures. Writes "
                                   "OUT/VOC2007 (Annotations, JPEGImages, ImageSets/Main/{train,val,trainval,test}) "
                                   "and OUT/coco/instances_{trainval,test}.json; the same seed gives the same bytes.")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--train", type=positive_int, default=240, metavar="N", help="trainval scenes (default 240)")
    p.add_argument("--test", type=positive_int, default=120, metavar="N", help="test scenes (default 120)")
    p.add_argument("--size", type=positive_int, default=192, metavar="PX",
                   help="scene width in pixels, 64..1024 (height 0.75-1x of it; default 192)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..detect.scenes import CLASS_NAMES, make_scenes
    from ..errors import UserError
    from ..fileio import printable

    if not 64 <= args.size <= 1024:
        raise UserError(f"--size must be in 64..1024, got {args.size}")
    voc = make_scenes(args.out, seed=args.seed, n_train=args.train, n_test=args.test, size=args.size)
    result = {"voc": printable(voc), "coco_trainval": printable(voc.parent / "coco" / "instances_trainval.json"),
              "coco_test": printable(voc.parent / "coco" / "instances_test.json"), "classes": CLASS_NAMES,
              "trainval": args.train, "test": args.test, "seed": args.seed, "size": args.size}
    print_result(args.json, result,
                 f"wrote {args.train} trainval + {args.test} test scenes ({', '.join(CLASS_NAMES)}) to {result['voc']}")
    return 0
