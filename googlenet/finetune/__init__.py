"""Fine-tuning: start from pretrained weights (``--init``), freeze part of the net (``--freeze``), give the new
heads their own learning rate (``--head-lr-mult``). The training loop calls these hooks; nothing here trains.

    init spec -> source model (weights file | torchvision checkpoint | named source) -> copy trunk, carry head rows
    freeze spec -> requires_grad off (no autograd through the frozen prefix) + frozen BatchNorm kept in eval mode
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..errors import UserError
from ..pretrained import SOURCES

# The classifiers: main fc and the two aux heads. Everything else is the trunk.
HEAD_PREFIXES = ("fc.", "aux1.", "aux2.")
# Rows of these tensors are per class; they are what a changed class set replaces.
CLASS_ROW_KEYS = ("fc.weight", "fc.bias", "aux1.fc2.weight", "aux1.fc2.bias", "aux2.fc2.weight", "aux2.fc2.bias")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl")


def _is_torch_checkpoint(spec: str) -> bool:
    return Path(spec).suffix.lower() in TORCH_SUFFIXES


def init_arch(spec: str) -> str:
    """The arch an ``--init`` source holds, read without loading its tensors (for --arch's default)."""
    if spec in SOURCES:
        return SOURCES[spec].arch
    if _is_torch_checkpoint(spec):
        return "googlenet_tv"  # a torchvision-layout state dict
    from ..weights import read_metadata

    return read_metadata(spec)["arch"]


def init_preprocessing(spec: str) -> dict:
    """The preprocessing an ``--init`` source was trained with (input size, resize, mean/std, channel order, pixel
    range, grey), read without loading its tensors: a weights file's metadata (checked), the published values of a
    named source, torchvision's for a torchvision-layout checkpoint."""
    from ..weights import IMAGENET_PREPROCESSING, check_preprocessing

    if spec == "bvlc":
        from ..pretrained.bvlc import PREPROCESSING
    elif spec == "inception5h":
        from ..pretrained.inception5h import PREPROCESSING
    elif spec == "torchvision" or _is_torch_checkpoint(spec):
        PREPROCESSING = IMAGENET_PREPROCESSING
    else:
        from ..weights import read_metadata

        return read_metadata(spec)["preprocessing"]  # checked by read_metadata, defaults filled in
    return check_preprocessing(dict(PREPROCESSING), spec)


def load_init(spec: str) -> nn.Module:
    """The model an ``--init`` names: a project weights file, a named source (through pretrained.load_weights_arg, the
    one resolver --weights uses), or a torchvision-layout PyTorch checkpoint (read with weights_only=True)."""
    if _is_torch_checkpoint(spec) and spec not in SOURCES:
        from ..pretrained.torchvision_pth import from_torchvision_state_dict, read_checkpoint

        return from_torchvision_state_dict(read_checkpoint(spec), source=spec)
    from ..pretrained import load_weights_arg

    return load_weights_arg(spec)


def build_from(source: nn.Module, arch: str, num_classes: int, *, spec: str) -> nn.Module:
    """A fresh ``arch`` model for ``num_classes`` classes with the source's options (e.g. torchvision's
    transform_input), ready for apply_init; a source of another arch is refused in one line."""
    from ..models import arch_options, create_model

    src_arch = getattr(source, "arch_name", None)
    if src_arch != arch:
        raise UserError(f"--init {spec} holds arch {src_arch}, not {arch}; pass --arch {src_arch} or other weights")
    return create_model(arch, num_classes=num_classes, aux_logits=True, **arch_options(source))


def apply_init(model: nn.Module, source: nn.Module, class_names: list[str], *, spec: str) -> dict:
    """Copies ``source``'s weights into ``model`` (built for ``class_names``); returns what was carried.

    The trunk must match exactly (same arch and widths). Classifier rows are carried by class name: when the class
    set is the same the heads are copied whole; otherwise a class whose name the source also has keeps its row, and
    the other rows keep ``model``'s fresh initialisation. A source without class names carries its heads only when
    the class count matches (rows are then taken to be in the same order).
    """
    src_arch = getattr(source, "arch_name", None)
    dst_arch = getattr(model, "arch_name", None)
    if src_arch != dst_arch:
        raise UserError(f"--init {spec} holds arch {src_arch}, not {dst_arch}; pass --arch {src_arch} or other weights")
    if getattr(source, "cfg", None) != getattr(model, "cfg", None):
        raise UserError(f"--init {spec}: its {src_arch} options ({source.cfg}) differ from the model's ({model.cfg})")
    src, own = source.state_dict(), model.state_dict()
    trunk = [k for k in own if not k.startswith(HEAD_PREFIXES)]
    if missing := [k for k in trunk if k not in src]:
        raise UserError(f"--init {spec} does not fit {dst_arch}: {len(missing)} trunk tensors missing "
                        f"(e.g. {missing[0]})")
    for k in trunk:
        if tuple(src[k].shape) != tuple(own[k].shape):
            raise UserError(f"--init {spec} does not fit {dst_arch}: {k} has shape {tuple(src[k].shape)}, "
                            f"expected {tuple(own[k].shape)}")
    new = {**own, **{k: src[k] for k in trunk}}
    # The aux heads' hidden layers (conv, fc1) are not per class: carried whenever the source has them.
    for k in own:
        if k.startswith(("aux1.", "aux2.")) and k not in CLASS_ROW_KEYS and k in src and src[k].shape == own[k].shape:
            new[k] = src[k]
    src_names = getattr(source, "class_names", None)
    n_src = int(source.num_classes)
    if src_names is not None:
        index = {name: i for i, name in enumerate(src_names)}
        pairs = [(i, index[name]) for i, name in enumerate(class_names) if name in index]
    else:
        pairs = [(i, i) for i in range(n_src)] if n_src == len(class_names) else []
    for k in CLASS_ROW_KEYS:
        if k in own and k in src and pairs:
            rows = new[k].clone()
            dst_i, src_i = map(torch.tensor, zip(*pairs))
            rows[dst_i] = src[k][src_i].to(rows.dtype)
            new[k] = rows
    model.load_state_dict(new, strict=True)
    same = src_names is not None and list(src_names) == list(class_names)
    return {"source": spec, "arch": src_arch, "source_classes": n_src, "carried_classes": len(pairs),
            "carried_class_names": [class_names[i] for i, _ in pairs][:50],
            "heads_replaced": not (same or (src_names is None and n_src == len(class_names))),
            "source_metadata": {k: v for k, v in (getattr(source, "metadata", None) or {}).items()
                                if k in ("training", "source")}}


def head_parameter_names(model: nn.Module) -> set[str]:
    """The per-class classifier tensors: the layers a changed class set replaces (the head-lr-mult group)."""
    return {k for k, _ in model.named_parameters() if k in CLASS_ROW_KEYS}


def trunk_layer_names(model: nn.Module) -> list[str]:
    """Module names (top-level and nested) that --freeze LAYER accepts, in forward order."""
    return [name for name, _ in model.named_modules()
            if name and name.split(".")[0] not in ("fc", "aux1", "aux2", "dropout", "avgpool")]


def freeze(model: nn.Module, spec: Optional[str]) -> list[str]:
    """Turns off gradients for the frozen part; returns the frozen parameter names.

    none: nothing. trunk: everything but the main classifier ``fc`` - a linear probe on the 1024-d pooled features,
    the linear evaluation protocol of Kornblith et al. (2019) and SimCLR. The aux heads exist only to send gradient
    into the trunk; with the trunk frozen they could change nothing inference uses, so they are frozen too and the
    training step does not run them (aux_weight 0, see train/loop.py). LAYER: every trunk parameter up to and
    including module LAYER, in forward order (parameters are registered in forward order in GoogLeNet, so "up to" is a
    prefix of named_parameters).
    """
    if spec in (None, "", "none"):
        return []
    params = [(k, p) for k, p in model.named_parameters() if not k.startswith(HEAD_PREFIXES)]
    if spec == "trunk":
        frozen = [k for k, _ in model.named_parameters() if not k.startswith("fc.")]
    else:
        layers = trunk_layer_names(model)
        if spec not in layers:
            tops = [n for n in layers if "." not in n]
            raise UserError(f"--freeze {spec!r}: no such layer; use none, trunk, or a layer such as "
                            f"{', '.join(tops)} (nested names like inception4a.branch2 work too)")
        inside = [i for i, (k, _) in enumerate(params) if k.startswith(spec + ".")]
        if not inside:  # a parameter-free layer (a pool, LRN): freeze what comes before it
            names = [n for n, _ in model.named_modules()]
            before = set(names[:names.index(spec)])
            inside = [i for i, (k, _) in enumerate(params) if k.rsplit(".", 1)[0] in before]
        frozen = [k for k, _ in params[: max(inside) + 1]] if inside else []
    frozen_set = set(frozen)
    for k, p in model.named_parameters():
        if k in frozen_set:
            p.requires_grad_(False)
    model._frozen_modules = [n for n, m in model.named_modules()
                             if n and list(m.parameters(recurse=False))
                             and all(f"{n}.{k}" in frozen_set for k, _ in m.named_parameters(recurse=False))]
    return frozen


def keep_frozen_in_eval(model: nn.Module) -> None:
    """After model.train(): frozen BatchNorm layers keep their running statistics (eval mode), frozen dropout-free
    layers behave the same either way. Called by the training loop after every model.train()."""
    for name in getattr(model, "_frozen_modules", ()):
        module = model.get_submodule(name)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
