"""``googlenet dream``: DeepDream of an image at a layer (the original notebook's method)."""

from __future__ import annotations

import argparse

from ..errors import UserError
from .common import add_grayscale_flag, add_weights_flag, positive_int

# The notebook dreamt photos at their own size, 500-1024 px, and tuned its defaults there (a 32 px roll, 4 octaves
# x1.4 whose smallest is 1/2.7 of the image). A small image is raised to this shorter side, so that the octaves stay
# above a net's input size and the roll moves a small part of the image; docs/interpret.md has the measurements.
MIN_SIDE = 448
MAX_SIDE = 2048  # bounds the memory of a dream (activations of a 2048 px image on the CPU: a few GB)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dream", help="DeepDream an image at a layer")
    p.add_argument("image")
    add_weights_flag(p)
    p.add_argument("--layer", required=True)
    p.add_argument("--octaves", type=positive_int, default=4)
    p.add_argument("--octave-scale", type=float, default=1.4, help="size ratio between octaves (default 1.4)")
    p.add_argument("--steps", type=positive_int, default=10, help="steps an octave (default 10)")
    p.add_argument("--step-size", type=float, default=1.5,
                   help="step in 0..255 pixel units, normalised by the mean |gradient| (default 1.5)")
    p.add_argument("--jitter", type=int, default=32,
                   help="random roll in pixels at 224 px, scaled by side/224 below that; 0 turns it off (default 32)")
    p.add_argument("--size", type=positive_int, default=None,
                   help=f"shorter side to dream at, aspect kept (default: the image's own, raised to at least "
                        f"{MIN_SIDE} and the longer side kept to at most {MAX_SIDE})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    add_grayscale_flag(p)
    p.add_argument("--out", required=True, metavar="OUT.png")


def run(args: argparse.Namespace) -> int:
    import torch.nn.functional as F

    from ..interpret import ModelInput, dream
    from ..interpret.common import check_device, save_png
    from ..pretrained import load_weights_arg

    check_device(args.device)
    if args.size is not None and args.size > MAX_SIDE:
        raise UserError(f"--size at most {MAX_SIDE}")
    if not 1.0 < args.octave_scale <= 4.0:
        raise UserError(f"--octave-scale must be in (1, 4], got {args.octave_scale}")
    if not 0.0 < args.step_size <= 255.0:
        raise UserError(f"--step-size must be in (0, 255], got {args.step_size}")
    if not 0 <= args.jitter <= 256:
        raise UserError(f"--jitter must be in 0..256, got {args.jitter}")
    model = load_weights_arg(args.weights)
    prep = ModelInput(model, args.grayscale)
    img = prep.load_native(args.image)
    img = F.interpolate(img[None], size=dream_size(img.shape[-2:], args.size), mode="bilinear",
                        align_corners=False, antialias=True)[0].clamp(0, 1)
    out = dream(model, img, args.layer, octaves=args.octaves, octave_scale=args.octave_scale, steps=args.steps,
                step_size=args.step_size / 255, jitter=args.jitter, seed=args.seed,
                grayscale=args.grayscale, device=args.device)
    save_png(out, args.out)
    return 0


def dream_size(hw: tuple[int, int], short_side: int | None) -> tuple[int, int]:
    """(H, W) to dream at: the shorter side ``short_side`` (default: its own, at least MIN_SIDE), aspect kept; the
    longer side at most MAX_SIDE."""
    h, w = hw
    scale = (short_side or max(MIN_SIDE, min(h, w))) / min(h, w)
    if max(h, w) * scale > MAX_SIDE:
        if short_side:
            raise UserError(f"--size {short_side} makes the image's longer side {round(max(h, w) * scale)} px; "
                            f"at most {MAX_SIDE}")
        scale = MAX_SIDE / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))
