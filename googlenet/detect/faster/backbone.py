"""The GoogLeNet trunk as a torchvision detection backbone, two ways (Faster R-CNN, Ren et al. 2015; FPN, Lin et al.
2017), built from the classifier's own modules so that any project GoogLeNet (and its weights) serves:

* ``c4``   stem .. inception4e as the backbone: one map, stride 16, 832 channels. RoIAlign takes 14 x 14 from it and
           the box head is the rest of the classifier, maxpool4 -> inception5a -> inception5b -> global average pool
           (1024), as torchvision's and Detectron's ResNet-C4 put res5 in the head.
* ``fpn``  the whole trunk with a feature pyramid over inception3b / 4e / 5b (480 / 832 / 1024 channels, strides
           8 / 16 / 32) named "0" / "1" / "2", plus FPN's max-pooled "pool" (stride 64) for the RPN only.

The detector takes RGB in 0..1 (GeneralizedRCNNTransform's normalisation is made the identity); the trunk's own
preprocessing runs first inside the backbone (``Preprocess``), so a BVLC trunk sees BGR 0..255 minus (104, 117, 123)
and a torchvision one ImageNet mean/std followed by its ``transform_input`` remap, exactly as its classifier does.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
from torch import Tensor, nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d

from ...data.transforms import unit_model_input
from ...models.googlenet import GoogLeNet, tv_transform_input

TRUNKS = ("c4", "fpn")
# The classifier's modules in forward order (forward_features without the aux heads), grouped as the trainable-layers
# count sees them from the top: torchvision counts ResNet's layer4..conv1 the same way.
STAGES = (
    ("stem", ("conv1", "maxpool1", "lrn1", "conv2", "conv3", "lrn2", "maxpool2")),
    ("inception3", ("inception3a", "inception3b", "maxpool3")),
    ("inception4", ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e")),
    ("inception5", ("maxpool4", "inception5a", "inception5b")),
)
FPN_LAYERS = {"inception3b": "0", "inception4e": "1", "inception5b": "2"}  # module -> feature-map name
FPN_IN_CHANNELS = [480, 832, 1024]
C4_CHANNELS = 832  # inception4e, stride 16
HEAD_CHANNELS = 1024  # inception5b, pooled


class Preprocess(nn.Module):
    """RGB 0..1 (N x 3 x H x W) -> the input the trunk was trained on, as its weights' preprocessing says: the
    project's one preprocessing step (``unit_model_input``: grey, pixel range, channel order, mean, std), then
    torchvision's ``transform_input`` remap for the nets that have it. No parameters: the state dict is unchanged."""

    def __init__(self, preprocessing: dict, transform_input: bool = False) -> None:
        super().__init__()
        self.preprocessing = dict(preprocessing)
        self.transform_input = transform_input

    def forward(self, x: Tensor) -> Tensor:
        x = unit_model_input(x, self.preprocessing)
        return tv_transform_input(x) if self.transform_input else x

    def extra_repr(self) -> str:
        p = self.preprocessing
        return (f"{p.get('channel_order', 'RGB')} x{p.get('pixel_range', 1)}, mean={p.get('mean')}, "
                f"std={p.get('std')}, transform_input={self.transform_input}")


def trunk_layers(model: GoogLeNet, last: str) -> nn.Sequential:
    """Preprocess and the classifier's modules up to and including ``last``, in forward order (the modules are
    shared, not copied, so their names, and the state dict keys under them, are the classifier's)."""
    pre = getattr(model, "preprocessing", None)
    if pre is None:
        from ...weights import default_preprocessing

        pre = default_preprocessing()
    layers: OrderedDict[str, nn.Module] = OrderedDict(preprocess=Preprocess(pre, bool(model.transform_input)))
    for _, names in STAGES:
        for name in names:
            layers[name] = getattr(model, name)
            if name == last:
                return nn.Sequential(layers)
    raise ValueError(f"no trunk layer {last!r}")


def freeze_stages(modules: list[nn.Module], trainable_layers: int) -> None:
    """requires_grad off for all but the top ``trainable_layers`` stages (0..4) of STAGES, wherever their modules
    now live (C4 puts inception5 in the box head). Frozen BatchNorm is handled by ``frozen_batchnorm``."""
    if not 0 <= trainable_layers <= len(STAGES):
        raise ValueError(f"trainable_layers must be in 0..{len(STAGES)}, got {trainable_layers}")
    frozen = {name for _, names in STAGES[:len(STAGES) - trainable_layers] for name in names}
    for container in modules:
        for name, child in container.named_children():
            if name in frozen:
                child.requires_grad_(False)


def frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d replaced by torchvision's FrozenBatchNorm2d holding its statistics and affine terms, as
    torchvision's detection models do with a pretrained backbone (batches of 2 images give useless batch stats)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(frozen, key).copy_(getattr(child, key))
            setattr(module, name, frozen)
        else:
            frozen_batchnorm(child)
    return module


class C4Head(nn.Module):
    """The box head of the C4 trunk: the classifier's top, 14 x 14 RoI features -> maxpool4 (7 x 7) -> inception5a
    -> inception5b -> global average pool -> (R, 1024)."""

    def __init__(self, model: GoogLeNet) -> None:
        super().__init__()
        self.maxpool4 = model.maxpool4
        self.inception5a = model.inception5a
        self.inception5b = model.inception5b
        self.out_channels = HEAD_CHANNELS

    def forward(self, x: Tensor) -> Tensor:  # R x 832 x 14 x 14
        x = self.inception5b(self.inception5a(self.maxpool4(x)))  # R x 1024 x 7 x 7
        return torch.flatten(x.mean((2, 3)), 1)  # R x 1024


def googlenet_backbone(model: GoogLeNet, trunk: str, *, trainable_layers: int, frozen_bn: bool,
                       fpn_channels: int = 256) -> tuple[nn.Module, Optional[nn.Module]]:
    """(backbone, box head or None) for ``trunk``; the backbone has ``out_channels`` as FasterRCNN wants.

    frozen_bn: BN layers become FrozenBatchNorm2d (with pretrained weights; from scratch they keep training).
    """
    if trunk not in TRUNKS:
        raise ValueError(f"trunk must be one of {', '.join(TRUNKS)}, got {trunk!r}")
    if frozen_bn:
        frozen_batchnorm(model)
    if trunk == "c4":
        body = trunk_layers(model, "inception4e")
        body.out_channels = C4_CHANNELS
        head = C4Head(model)
        freeze_stages([body, head], trainable_layers)
        return body, head
    body = trunk_layers(model, "inception5b")
    freeze_stages([body], trainable_layers)
    # FPN's own default extra block: LastLevelMaxPool, a "pool" map at stride 64 for the RPN.
    return BackboneWithFPN(body, dict(FPN_LAYERS), FPN_IN_CHANNELS, fpn_channels), None
