"""torch.hub entry points: ``torch.hub.load("REPO_OR_DIR", "googlenet", weights="bvlc")`` (``source="local"`` for a
clone). Each is ``googlenet.create_model`` for one arch; ``weights``: None, "bvlc", "inception5h", "torchvision" or a
project weights file."""

dependencies = ["torch", "torchvision", "safetensors"]

from googlenet.api import create_model as _create  # noqa: E402  (torch.hub reads `dependencies` first)


def googlenet(weights=None, **kwargs):
    """The paper's network (LRN, 5x5 convolutions); weights="bvlc" for BVLC's trained weights."""
    return _create("googlenet", weights, **kwargs)


def googlenet_bn(weights=None, **kwargs):
    """The paper's network with BatchNorm after every convolution, no LRN."""
    return _create("googlenet_bn", weights, **kwargs)


def googlenet_tv(weights=None, **kwargs):
    """torchvision's GoogLeNet layout; weights="torchvision" for its ImageNet weights."""
    return _create("googlenet_tv", weights, **kwargs)


def googlenet_inception5h(weights=None, **kwargs):
    """Google's TensorFlow GoogLeNet (DeepDream's); weights="inception5h"."""
    return _create("googlenet_inception5h", weights, **kwargs)
