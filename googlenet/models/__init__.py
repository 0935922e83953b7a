"""Model registry: one way to make any model, as timm and torchvision do."""

from __future__ import annotations

from torch import nn

from .googlenet import ARCHS, ArchConfig, GoogLeNet, GoogLeNetOutputs, arch_options, build

__all__ = ["ArchConfig", "GoogLeNet", "GoogLeNetOutputs", "arch_options", "create_model", "list_models", "unwrap_model"]


def list_models() -> list[str]:
    """Names accepted by ``create_model``."""
    return sorted(ARCHS)


def create_model(name: str, *, num_classes: int = 1000, aux_logits: bool = True, **options) -> nn.Module:
    """Builds the architecture ``name`` with fresh weights.

    options: ``dropout``, ``aux_dropout``, ``transform_input``, ``init`` ("caffe" or "torchvision").
    """
    model = build(name, num_classes=num_classes, aux_logits=aux_logits, **options)
    model.arch_name = name
    return model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module itself, out of a DDP (``.module``) and/or torch.compile (``._orig_mod``) wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
