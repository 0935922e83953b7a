"""``googlenet crops``: draw the crops the paper's test protocol takes from an image (a contact sheet)."""

from __future__ import annotations

import argparse

from .common import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("crops", help="contact sheet of the 1, 10 or 144 test crops of an image",
                       description="Draws every crop of the chosen scheme, labelled with its scale, square, "
                                   "crop and mirroring, into one image (see docs/evaluation.md).")
    p.add_argument("image")
    p.add_argument("--scheme", choices=("1", "10", "144"), default="144")
    p.add_argument("--out", required=True, help="output image (.png, .jpg, ...), written atomically")
    p.add_argument("--crop-size", type=positive_int, default=224, help="crop side (default 224)")
    p.add_argument("--resize-size", type=positive_int, default=None,
                   help="shorter side for the 1 and 10 crop schemes (default crop size * 256 / 224)")
    p.add_argument("--tile", type=positive_int, default=112, help="pixels per tile on the sheet (default 112)")


def run(args: argparse.Namespace) -> int:
    from ..data.folder import printable
    from ..data.images import BadImage, load_image
    from ..errors import UserError
    from ..evaluate.sheet import contact_sheet, save_sheet

    # Bounds keep the sheet a picture, not an allocation of tens of gigabytes.
    if not 16 <= args.crop_size <= 2048:
        raise UserError(f"--crop-size must be in [16, 2048], got {args.crop_size}")
    if args.resize_size is not None and not args.crop_size <= args.resize_size <= 4 * args.crop_size:
        raise UserError(f"--resize-size must be in [crop size, 4 x crop size] = [{args.crop_size}, "
                        f"{4 * args.crop_size}], got {args.resize_size}")
    if not 16 <= args.tile <= 512:
        raise UserError(f"--tile must be in [16, 512], got {args.tile}")
    try:
        sheet = contact_sheet(load_image(args.image), args.scheme, crop_size=args.crop_size,
                              resize_size=args.resize_size, tile=args.tile)
    except BadImage as e:
        raise UserError(f"{printable(args.image)}: {e}") from None
    save_sheet(sheet, args.out)
    print(f"wrote {printable(args.out)} ({sheet.width}x{sheet.height}, {args.scheme} crops)")
    return 0
