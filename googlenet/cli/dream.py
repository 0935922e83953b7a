"""``googlenet dream``: DeepDream of an image at a layer (the original notebook's method)."""

from __future__ import annotations

import argparse

from .common import positive_int
from .visualize import add_grayscale_flag


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dream", help="DeepDream an image at a layer")
    p.add_argument("image")
    p.add_argument("--weights", required=True, metavar="W")
    p.add_argument("--layer", required=True)
    p.add_argument("--octaves", type=positive_int, default=4)
    p.add_argument("--octave-scale", type=float, default=1.4, help="size ratio between octaves (default 1.4)")
    p.add_argument("--steps", type=positive_int, default=10, help="steps an octave (default 10)")
    p.add_argument("--step-size", type=float, default=1.5,
                   help="step in 0..255 pixel units, normalised by the mean |gradient| (default 1.5)")
    p.add_argument("--jitter", type=int, default=32,
                   help="random roll in pixels at 224 px, scaled by side/224 below that; 0 turns it off (default 32)")
    p.add_argument("--size", type=positive_int, default=None,
                   help="image side to dream at (default: the model's input size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    add_grayscale_flag(p)
    p.add_argument("--out", required=True, metavar="OUT.png")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch.nn.functional as F

    from ..errors import UserError
    from ..interpret import ModelInput, dream
    from ..interpret.common import check_device, save_png
    from ..weights import load_weights_arg

    check_device(args.device)

    if args.size is not None and args.size > 2048:
        raise UserError("--size at most 2048")
    if not 1.0 < args.octave_scale <= 4.0:
        raise UserError(f"--octave-scale must be in (1, 4], got {args.octave_scale}")
    if not 0.0 < args.step_size <= 255.0:
        raise UserError(f"--step-size must be in (0, 255], got {args.step_size}")
    if not 0 <= args.jitter <= 256:
        raise UserError(f"--jitter must be in 0..256, got {args.jitter}")
    model = load_weights_arg(args.weights)
    prep = ModelInput(model, args.grayscale)
    img = prep.load(args.image)
    if args.size:
        img = F.interpolate(img[None], size=(args.size, args.size), mode="bilinear", align_corners=False)[0]
    out = dream(model, img, args.layer, octaves=args.octaves, octave_scale=args.octave_scale, steps=args.steps,
                step_size=args.step_size / 255, jitter=args.jitter, seed=args.seed,
                grayscale=args.grayscale, device=args.device)
    save_png(out, args.out)
    return 0
