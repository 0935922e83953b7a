"""``googlenet explain``: which pixels made the model choose a class (Captum: Grad-CAM, integrated gradients,
occlusion), drawn over the image."""

from __future__ import annotations

import argparse
import json

from .common import add_grayscale_flag, add_weights_flag, non_negative_float, non_negative_int, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="attribution heat map of an image (needs the [explain] extra)")
    p.add_argument("image")
    add_weights_flag(p)
    p.add_argument("--method", choices=("gradcam", "integrated-gradients", "occlusion"), default="gradcam")
    p.add_argument("--target", type=non_negative_int, default=None, help="class index (default: the top class)")
    p.add_argument("--layer", default="inception5b", help="Grad-CAM layer (default inception5b)")
    p.add_argument("--steps", type=positive_int, default=50, help="integrated-gradients steps to start from")
    p.add_argument("--max-steps", type=positive_int, default=400,
                   help="integrated gradients: double the steps up to this many while the attributions miss "
                        "F(x) - F(black) by more than --tolerance (Sundararajan et al.'s completeness check)")
    p.add_argument("--tolerance", type=non_negative_float, default=0.05,
                   help="integrated gradients: completeness error allowed, relative to F(x) - F(black) (default 0.05)")
    add_grayscale_flag(p)
    p.add_argument("--out", required=True, metavar="OUT.png")


def run(args: argparse.Namespace) -> int:
    from ..interpret import ModelInput, explain
    from ..interpret.common import save_png
    from ..interpret.explain_captum import overlay
    from ..pretrained import load_weights_arg

    model = load_weights_arg(args.weights)
    img = ModelInput(model, args.grayscale).load(args.image)
    heat, target, extras = explain(model, img, args.method, target=args.target, layer=args.layer,
                                   steps=args.steps, max_steps=max(args.max_steps, args.steps),
                                   tolerance=args.tolerance, grayscale=args.grayscale)
    save_png(overlay(img, heat), args.out)
    names = getattr(model, "class_names", None)
    print(json.dumps({"target": target, "label": names[target] if names else str(target), **extras}))
    return 0
