"""``googlenet atlas``: a static HTML page of a layer's channels, each with its feature visualisation and the dataset
images that excite it most."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from .common import add_grayscale_flag, add_weights_flag, non_negative_int, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..interpret.atlas import DEFAULT_CHANNELS, DEFAULT_TOP

    p = sub.add_parser("atlas", help="an offline HTML atlas of a layer: feature visualisations + top dataset images",
                       description="Writes OUT/index.html and its PNGs (open it from disk; no server, no network): "
                                   "per channel, its feature visualisation (as 'visualize') and the dataset images "
                                   "with the highest mean activation of the channel.")
    add_weights_flag(p)
    p.add_argument("--layer", required=True, help="layer name, e.g. inception4c ('googlenet layers' lists them)")
    p.add_argument("--data", required=True, metavar="DIR|embedded",
                   help="a folder of images (recursive) or 'embedded' (the bundled Fashion-MNIST held-out set)")
    p.add_argument("--channels", metavar="SPEC", default=None,
                   help=f"N (the first N), 'all', or channels such as 3,7,12 or 0-7 (default: the first "
                        f"{DEFAULT_CHANNELS})")
    p.add_argument("--top", type=positive_int, default=DEFAULT_TOP, metavar="K",
                   help=f"images shown per channel (default {DEFAULT_TOP})")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="scan N images spread over the data (default: all)")
    p.add_argument("--steps", type=positive_int, default=512, help="visualisation steps (default 512, Lucid's)")
    p.add_argument("--size", type=positive_int, default=128, help="visualisation side in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=64, help="images a forward pass (default 64)")
    p.add_argument("--workers", type=non_negative_int, default=0, help="image-decoding processes (default 0)")
    p.add_argument("--device", default="cpu")
    add_grayscale_flag(p)
    p.add_argument("--out", required=True, metavar="DIR")


def command_line(args: argparse.Namespace) -> str:
    """The command with every setting resolved (defaults included), for the page's 'made by' line."""
    parts = ["googlenet", "atlas"]
    for flag in ("weights", "layer", "data", "channels", "top", "limit", "steps", "size", "seed", "device", "out"):
        value = getattr(args, flag)
        if value is not None:
            parts += [f"--{flag}", str(value)]
    if args.grayscale is not None:
        parts.append("--grayscale" if args.grayscale else "--no-grayscale")
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..fileio import printable
    from ..interpret.atlas import build_atlas, open_source, write_atlas
    from ..interpret.common import check_device
    from ..pretrained import SOURCES, load_weights_arg

    # Bounds that keep a typo from filling memory or the disk (a batch of a million decoded images, a page of
    # a million thumbnails per channel).
    for flag, value, most in (("--size", args.size, 1024), ("--top", args.top, 256),
                              ("--batch-size", args.batch_size, 4096), ("--workers", args.workers, 64)):
        if value > most:
            raise UserError(f"{flag} at most {most}, got {value}")
    check_device(args.device)
    model = load_weights_arg(args.weights)
    source = open_source(args.data, args.limit)
    atlas = build_atlas(model, args.layer, source, args.channels, top=args.top, steps=args.steps, size=args.size,
                        seed=args.seed, grayscale=args.grayscale, batch_size=args.batch_size, workers=args.workers,
                        device=args.device)
    weights = args.weights if args.weights in SOURCES else os.path.basename(args.weights)
    info = {"weights": printable(weights), "arch": getattr(model, "arch_name", type(model).__name__),
            "layer": f"{args.layer} ({atlas.layer_channels} channels; {len(atlas.channels)} shown)",
            "data": f"{source.description}; {len(atlas.scanned)} read",
            "visualisation": f"{args.steps} steps, {args.size}x{args.size}, seed {args.seed} (Lucid's method)"}
    page = write_atlas(atlas, source, args.out, info=info, command=command_line(args))
    if atlas.skipped:
        print(f"{len(atlas.skipped)} unreadable file(s) left out, e.g. {printable(atlas.skipped[0].path)}: "
              f"{atlas.skipped[0].reason}", file=sys.stderr)
    print(f"wrote {printable(page)} ({len(atlas.channels)} channels x {atlas.top_values.shape[1]} images)",
          file=sys.stderr)
    return 0
