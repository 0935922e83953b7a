"""Every foreign format, and the named sources built on them. Each reader depends only on the project's weights
file (``googlenet.weights``) and the model registry (``googlenet.models``); nothing outside this package reads a
foreign format.

* ``torchvision_pth``  torchvision's GoogLeNet checkpoints (``.pth`` state dicts, read weights-only) -> ``googlenet_tv``
* ``caffe``            Caffe's binary ``NetParameter`` (``.caffemodel``), parsed with ``protobuf`` (no Caffe needed)
* ``bvlc``             BVLC's ``bvlc_googlenet.caffemodel`` -> the paper's ``googlenet``, aux heads included
* ``inception5h``      Google's TensorFlow GoogLeNet (GraphDef, or lucent's ``.pth`` port) -> ``googlenet_inception5h``
* ``fetch``            downloading a named source's original file into torch.hub's cache, one line offline

``SOURCES`` names what ``--weights NAME`` and ``googlenet.create_model(name, weights=NAME)`` resolve through.
"""

from __future__ import annotations

import importlib
import os
from typing import NamedTuple

from torch import nn

from ..weights import load_model


class Source(NamedTuple):
    arch: str  # the arch the source's weights fill
    module: str  # the reader, imported on use (torchvision, protobuf and the like only load when asked for)
    loader: str  # its function: () -> the model in eval mode, with metadata and preprocessing
    about: str


SOURCES = {
    "torchvision": Source("googlenet_tv", "torchvision_pth", "load_torchvision_pretrained",
                          "torchvision's ImageNet weights (GoogLeNet_Weights.IMAGENET1K_V1)"),
    "bvlc": Source("googlenet", "bvlc", "load_bvlc_pretrained", "BVLC Caffe's bvlc_googlenet.caffemodel"),
    "inception5h": Source("googlenet_inception5h", "inception5h", "load_inception5h_pretrained",
                          "Google's TensorFlow GoogLeNet (DeepDream's inception5h), lucent's PyTorch port"),
}


def load_named(name: str) -> nn.Module:
    """A named source's model: from torch.hub's cache, else fetched (online), else one clear line."""
    source = SOURCES[name]
    return getattr(importlib.import_module(f"{__name__}.{source.module}"), source.loader)()


def load_weights_arg(spec: str | os.PathLike) -> nn.Module:
    """What a ``--weights`` flag names: one of ``SOURCES`` or a project weights file."""
    return load_named(str(spec)) if str(spec) in SOURCES else load_model(spec)


__all__ = ["SOURCES", "Source", "load_named", "load_weights_arg"]
