"""Flag types and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import importlib
import json
import math

from ..errors import UserError


def add_commands(sub: argparse._SubParsersAction, names, prefix: str = "") -> None:
    """Registers the parser of each module ``cli/<prefix><name>.py`` and binds its ``run`` as ``func``; a module not
    shipped in this build is left out."""
    for name in names:
        try:
            module = importlib.import_module(f".{prefix}{name}", __package__)
        except ModuleNotFoundError as e:
            if e.name == f"{__package__}.{prefix}{name}":
                continue  # a command not shipped in this build
            raise
        module.add_parser(sub)
        if hasattr(module, "run"):  # not detect: each of its actions binds its own
            sub.choices[name].set_defaults(func=module.run)


def print_result(as_json: bool, result: dict, *lines: str) -> None:
    """``--json``: the result as one JSON object, the last line on stdout; otherwise ``lines``, for a reader."""
    print(json.dumps(result) if as_json else "\n".join(lines))


def add_weights_flag(p: argparse.ArgumentParser, *, several: bool = False) -> None:
    """``--weights``: what ``pretrained.load_weights_arg`` reads, for every command that loads a model; ``several``
    for the commands that ensemble."""
    text = ("weights file(s) or named sources (torchvision, bvlc, inception5h); several make an ensemble" if several
            else "weights file or a named source (torchvision, bvlc, inception5h)")
    p.add_argument("--weights", nargs="+" if several else None, required=True, metavar="W", help=text)


def add_grayscale_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grayscale", action=argparse.BooleanOptionalAction, default=None,
                   help="treat the model as trained on grey images (default: the weights metadata's 'grayscale')")


def add_inference_flags(p: argparse.ArgumentParser) -> None:
    """--precision / --backend: validated against googlenet.inference.PRECISIONS / BACKENDS by ``load_ensemble``
    (importing torch to list them here would slow every ``googlenet --help``)."""
    p.add_argument("--precision", default="fp32", help="inference precision, one of googlenet.inference.PRECISIONS "
                                                       "(fp32, bf16, ...; default fp32)")
    p.add_argument("--backend", default="eager", help="inference backend, one of googlenet.inference.BACKENDS "
                                                      "(default eager)")


def load_ensemble(args: argparse.Namespace):
    """The models of ``--weights`` as one ensemble, run with ``--precision`` / ``--backend`` (checked first, so a bad
    flag loads nothing)."""
    from ..evaluate.ensemble import Ensemble
    from ..inference import BACKENDS, PRECISIONS
    from ..pretrained import load_weights_arg

    if args.precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {args.precision!r}")
    if args.backend not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}, got {args.backend!r}")
    models = [load_weights_arg(w) for w in args.weights]
    return Ensemble(models, precision=args.precision, backend=args.backend, names=args.weights)


def check_arch(name: str) -> str:
    from ..models import list_models

    if name not in list_models():
        raise UserError(f"unknown arch {name!r}; choose from {', '.join(list_models())}")
    return name


def _number(text: str, convert, ok, expected: str, expected_in_range: str):
    """The shape of every numeric flag type: ``convert(text)``, refused unless ``ok`` of it."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        # An int echoes the number read ("-07" -> -7), a float the text as typed ("nan", "1e999").
        raise argparse.ArgumentTypeError(f"expected {expected_in_range}, got {value if convert is int else text}")
    return value


def positive_int(text: str, expected: str = "a positive integer") -> int:
    return _number(text, int, lambda v: v >= 1, expected, expected)


def non_negative_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "an integer >= 0", "an integer >= 0")


def positive_float(text: str) -> float:
    return _number(text, float, lambda v: 0 < v < math.inf, "a positive number", "a positive finite number")


def non_negative_float(text: str) -> float:
    return _number(text, float, lambda v: 0 <= v < math.inf, "a number >= 0", "a finite number >= 0")  # nan too
