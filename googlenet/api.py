"""The one call a PyTorch user expects: ``googlenet.create_model(name, weights=...)``, as ``timm.create_model`` and
``torchvision.models.googlenet(weights=...)`` are; ``hubconf.py`` serves the same call to ``torch.hub.load``."""

from __future__ import annotations

import os
from typing import Optional

from torch import nn

from .errors import UserError
from .models import arch_options
from .models import create_model as build_model
from .pretrained import SOURCES, load_weights_arg
from .weights import attach_metadata, default_preprocessing

CLASS_ROW_PREFIXES = ("fc.", "aux1.fc2.", "aux2.fc2.")  # the layers with one row per class


def create_model(name: str, weights: Optional[str | os.PathLike] = None, *, num_classes: Optional[int] = None,
                 **options) -> nn.Module:
    """The arch ``name`` with ``preprocessing``, ``class_names`` and ``metadata`` attached (those of the weights,
    else ImageNet's preprocessing and no class names). Fresh weights: in training mode, as any new module; with
    weights: in eval mode, ready for inference (``.train()`` to fine-tune).

    weights: None (fresh weights), a named source (``"bvlc"``, ``"inception5h"``, ``"torchvision"``: from
    torch.hub's cache, else fetched online, else one clear error) or a project weights file's path. With weights,
    ``num_classes`` other than theirs gives a fresh classifier on the trained trunk (as ``train --init`` does);
    ``options`` (``aux_logits``, ``dropout``, ...) rebuild the model around the same trained layers.
    """
    if weights is None:
        model = build_model(name, num_classes=1000 if num_classes is None else num_classes, **options)
        attach_metadata(model, {"arch": name, "num_classes": model.num_classes, "aux_logits": model.aux_logits,
                                "preprocessing": default_preprocessing()})
        return model
    source = load_weights_arg(weights)
    if source.arch_name != name:
        hint = f" (it fills {SOURCES[str(weights)].arch})" if str(weights) in SOURCES else ""
        raise UserError(f"weights {weights} hold arch {source.arch_name}, not {name}{hint}")
    n = source.num_classes if num_classes is None else num_classes
    if n == source.num_classes and not options:
        return source.eval()
    model = build_model(name, num_classes=n, **{"aux_logits": source.aux_logits, **arch_options(source), **options})
    own, trained = model.state_dict(), source.state_dict()
    new_head = n != source.num_classes
    carried = {k: v for k, v in trained.items() if k in own and v.shape == own[k].shape
               and not (new_head and k.startswith(CLASS_ROW_PREFIXES))}
    if lost := [k for k in own if k in trained and k not in carried and not k.startswith(CLASS_ROW_PREFIXES)]:
        raise UserError(f"options {options} change the trained layers of {weights} (e.g. {lost[0]})")
    model.load_state_dict({**own, **carried})
    names = source.class_names if not new_head else None
    attach_metadata(model, {**source.metadata, "num_classes": n, "aux_logits": model.aux_logits,
                            "class_names": names, "preprocessing": source.preprocessing})
    return model.eval()


__all__ = ["create_model"]
