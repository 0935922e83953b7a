"""``googlenet visualize``: feature visualisation of channels of a layer (Lucid's method and defaults)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError
from .common import add_grayscale_flag, add_weights_flag, non_negative_int, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("visualize", help="feature visualisation of channels of a layer",
                       description="Optimises an image (Fourier-space, decorrelated colours, robustness transforms; "
                                   "Lucid's defaults) to excite each channel; writes one PNG per channel and a grid.")
    add_weights_flag(p)
    p.add_argument("--layer", required=True, help="layer name, e.g. inception4c ('googlenet layers' lists them)")
    p.add_argument("--channel", type=non_negative_int, nargs="+", required=True, metavar="C")
    p.add_argument("--objective", choices=("channel", "neuron"), default="channel")
    p.add_argument("--diversity", type=positive_int, default=1, metavar="N",
                   help="N diverse images of one channel (Lucid's diversity term)")
    p.add_argument("--steps", type=positive_int, default=512)
    p.add_argument("--restarts", type=positive_int, default=1, metavar="K",
                   help="optimise K random starts of each image and keep the most exciting (default 1, Lucid's)")
    p.add_argument("--decay-power", type=float, default=1.0, metavar="P",
                   help="Fourier scaling 1/frequency^P (default 1, Lucid's; 1.5 favours large shapes)")
    p.add_argument("--size", type=positive_int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    add_grayscale_flag(p)
    p.add_argument("--out", required=True, metavar="DIR")


def run(args: argparse.Namespace) -> int:
    from torchvision.utils import make_grid

    from ..interpret import visualize
    from ..interpret.common import check_device, save_png
    from ..interpret.visualize import MAX_DECAY_POWER
    from ..pretrained import load_weights_arg

    check_device(args.device)
    if args.size > 1024:
        raise UserError("--size at most 1024")
    if args.restarts > 64:
        raise UserError(f"--restarts at most 64, got {args.restarts}")
    if args.diversity > 1 and (len(args.channel) != 1 or args.restarts > 1):
        raise UserError("--diversity makes several images of one --channel, without --restarts")
    if not 0 <= args.decay_power <= MAX_DECAY_POWER:
        raise UserError(f"--decay-power must be in 0..{MAX_DECAY_POWER:g}, got {args.decay_power}")
    model = load_weights_arg(args.weights)
    images = visualize(model, args.layer, args.channel, objective=args.objective, diversity_images=args.diversity,
                       steps=args.steps, size=args.size, seed=args.seed, grayscale=args.grayscale,
                       restarts=args.restarts, decay_power=args.decay_power, device=args.device)
    out = Path(args.out)
    names = ([f"{args.layer}_c{args.channel[0]}_{i}.png" for i in range(len(images))] if args.diversity > 1
             else [f"{args.layer}_c{c}.png" for c in args.channel])
    for img, name in zip(images, names):
        save_png(img, out / name)
    save_png(make_grid(images, nrow=min(8, len(images)), padding=2, pad_value=1.0), out / f"{args.layer}_grid.png")
    print(f"wrote {len(images)} image(s) and {args.layer}_grid.png to {out}", file=sys.stderr)
    return 0
