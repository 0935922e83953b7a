"""The ``googlenet`` command: one subcommand per module of this package.

Each subcommand module defines ``add_parser(subparsers)``, which registers its flags, and ``run(args)``, which
``common.add_commands`` binds. Heavy imports happen inside the command, so ``googlenet --help`` stays quick. Errors a
user can cause (``UserError``, a bad flag, a missing or unreadable file) end in one line on stderr and exit code 2;
set GOOGLENET_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from ..errors import UserError
from ..fileio import check_limits
from .common import add_commands

# Order shown in --help.
COMMANDS = ("train", "eval", "predict", "crops", "summary", "convert", "export", "bench", "serve", "layers",
            "visualize", "dream", "explain", "atlas", "embed", "detect", "scenes", "shards")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (not the usage block) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> ArgumentParser:
    from .. import __version__

    parser = ArgumentParser(prog="googlenet", description="GoogLeNet (Inception v1): the paper's network, "
                            "trained, evaluated and exported as published.")
    parser.add_argument("--version", action="version", version=f"googlenet {__version__}")
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser, required=True),
                 COMMANDS)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    debug = os.environ.get("GOOGLENET_DEBUG") == "1"
    try:
        check_limits()  # GOOGLENET_MAX_IMAGE_BYTES / _WEIGHTS_BYTES / _PIXELS: docs/safe-files.md
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
        if debug:
            raise
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        message = e if isinstance(e, UserError) else f"{e.strerror or e}{where}"
        print(f"googlenet {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"googlenet {args.command}: interrupted", file=sys.stderr)
        return 130
