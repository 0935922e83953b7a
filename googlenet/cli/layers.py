"""``googlenet layers``: the layer names the interpretability commands take, with their output shapes."""

from __future__ import annotations

import argparse

from .common import add_weights_flag


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_weights_flag(sub.add_parser("layers", help="layer names for visualize/dream/explain/atlas/embed"))


def run(args: argparse.Namespace) -> int:
    import torch

    from ..interpret import ModelInput, layer_names
    from ..pretrained import load_weights_arg

    model = load_weights_arg(args.weights)
    shapes = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
             for n, m in model.named_modules() if n in set(layer_names(model))]
    size = ModelInput(model).size
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    for n in layer_names(model):
        print(f"{n:32s} {'x'.join(map(str, shapes.get(n, ())))}")
    return 0
