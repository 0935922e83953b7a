"""Flag types and helpers shared by the subcommands."""

from __future__ import annotations

import argparse


def add_weights_flag(p: argparse.ArgumentParser, *, several: bool = False) -> None:
    """``--weights``: what ``pretrained.load_weights_arg`` reads, for every command that loads a model; ``several``
    for the commands that ensemble."""
    if several:
        p.add_argument("--weights", nargs="+", required=True, metavar="W",
                       help="weights file(s) or named sources (torchvision, bvlc, inception5h); several make an "
                            "ensemble")
    else:
        p.add_argument("--weights", required=True, metavar="W",
                       help="weights file or a named source (torchvision, bvlc, inception5h)")


def positive_int(text: str, expected: str = "a positive integer") -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not 0 <= value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value
