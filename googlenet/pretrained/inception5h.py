"""Google's inception5h (DeepDream's ``tensorflow_inception_graph.pb``; its PyTorch port ``inception5h.pth`` used by
lucent and neural-dream; the Circuits work's "InceptionV1") as our ``googlenet_inception5h``.

The port names its layers after the graph's nodes; they map one to one onto ours:

    conv2d0 -> conv1   conv2d1 -> conv2   conv2d2 -> conv3   softmax2_pre_activation_matmul -> fc
    mixed{3a..5b}_{1x1, 3x3_bottleneck, 3x3, 5x5_bottleneck, 5x5, pool_reduce}_pre_relu_conv
        -> inception{..}.branch{1, 2.0, 2.1, 3.0, 3.1, 4.1}.conv

The port carries no aux heads. Its input: RGB, pixels 0..255, minus 117 on every channel, no std; 1008 classes (the
graph's label file, ``imagenet_comp_graph_label_strings.txt``, names them; else ``class_0..1007``). Its LRN
constants (size 9, alpha 1e-4, beta 0.5, k 1) are known to be wrong (lucent PR 51); our arch row follows the graph's
own LRN node (depth_radius 5, bias 2, alpha 1e-4, beta 0.5), because the weights were trained with that.
Widths that differ from Table 1: 4a's 3x3 has 204 filters (4a outputs 508), 5a's 5x5 reduce has 48.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from torch import nn

from ..errors import UserError
from ..fileio import printable

ARCH = "googlenet_inception5h"
NUM_CLASSES = 1008
PREPROCESSING = {"input_size": 224, "resize_size": 256, "interpolation": "bilinear", "mean": [117.0, 117.0, 117.0],
                 "std": [1.0, 1.0, 1.0], "channel_order": "RGB", "pixel_range": 255}
BLOCKS = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
BRANCHES = {"1x1": "branch1", "3x3_bottleneck": "branch2.0", "3x3": "branch2.1", "5x5_bottleneck": "branch3.0",
            "5x5": "branch3.1", "pool_reduce": "branch4.1"}


def layer_map() -> dict[str, str]:
    """The port's layer name (without .weight/.bias) -> our module, in network order."""
    names = {"conv2d0_pre_relu_conv": "conv1.conv", "conv2d1_pre_relu_conv": "conv2.conv",
             "conv2d2_pre_relu_conv": "conv3.conv"}
    for block in BLOCKS:
        for theirs, ours in BRANCHES.items():
            names[f"mixed{block}_{theirs}_pre_relu_conv"] = f"inception{block}.{ours}.conv"
    names["softmax2_pre_activation_matmul"] = "fc"
    return names


def from_state_dict(state: dict, *, source: str = "state dict", class_names: Optional[list[str]] = None) -> nn.Module:
    """``googlenet_inception5h`` holding the port's weights (eval mode, metadata attached). A state dict of another
    network is refused with one line naming the first missing or misshapen tensor."""
    from ..models import create_model

    model = create_model(ARCH, num_classes=NUM_CLASSES, aux_logits=False)
    ours = model.state_dict()
    new_state = {}
    for theirs, mine in layer_map().items():
        for part in ("weight", "bias"):
            key = f"{theirs}.{part}"
            if key not in state:
                raise UserError(f"{source} is not inception5h: tensor {key!r} is missing")
            want = tuple(ours[f"{mine}.{part}"].shape)
            if tuple(state[key].shape) != want:
                raise UserError(f"{source} is not inception5h: tensor {key!r} has shape {list(state[key].shape)}, "
                                f"expected {list(want)}")
            new_state[f"{mine}.{part}"] = state[key].float()
    model.load_state_dict(new_state, strict=True)
    if class_names is not None and len(class_names) != NUM_CLASSES:
        raise UserError(f"--labels has {len(class_names)} names for {NUM_CLASSES} classes")
    model.class_names = class_names or [f"class_{i}" for i in range(NUM_CLASSES)]
    model.preprocessing = dict(PREPROCESSING)
    return model.eval()


def graph_to_port(consts: dict) -> dict:
    """The graph's Const nodes (``conv2d0_w`` HWIO, ``conv2d0_b``, ..., ``softmax2_w`` in x out) renamed and laid out
    as the port's state dict (OIHW convolutions, out x in linear), so one mapping serves both files."""
    state = {}
    for port in layer_map():
        node = port.replace("_pre_relu_conv", "").replace("_pre_activation_matmul", "")
        if f"{node}_w" in consts:
            w = consts[f"{node}_w"]
            state[f"{port}.weight"] = w.permute(3, 2, 0, 1).contiguous() if w.dim() == 4 else w.t().contiguous()
        if f"{node}_b" in consts:
            state[f"{port}.bias"] = consts[f"{node}_b"]
    return state


def from_file(path: str | os.PathLike, *, class_names: Optional[list[str]] = None) -> nn.Module:
    """The port's ``.pth`` state dict, read with ``torch.load(weights_only=True)`` (a pickle carrying code is refused
    and never run), or the original ``.pb`` GraphDef (its Const nodes)."""
    if str(path).lower().endswith(".pb"):
        from .graphdef import read_graphdef

        state = graph_to_port(read_graphdef(path))
    else:
        from ..convert import read_checkpoint

        state = read_checkpoint(path)
    return from_state_dict(state, source=printable(path), class_names=class_names)


def convert_inception5h(src: str | os.PathLike, dst: str | os.PathLike, *,
                        class_names: Optional[list[str]] = None) -> nn.Module:
    from ..convert import _sha256
    from ..weights import attach_metadata, read_metadata, save_model

    model = from_file(src, class_names=class_names)
    save_model(model, dst, arch=ARCH, class_names=model.class_names, preprocessing=model.preprocessing,
               source={"from": "inception5h", "network": "inception5h", "file": Path(src).name,
                       "sha256": _sha256(Path(src))})
    attach_metadata(model, read_metadata(dst))
    return model


# The PyTorch port lucent loads (converted from the graph by ProGamerGov); the file torch.hub caches.
URL = "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth"


def load_inception5h_pretrained(*, timeout: float = 20.0) -> nn.Module:
    """inception5h as ``googlenet_inception5h``: the converted file from the cache, else the port's .pth from the
    cache, else downloaded (online), else one line saying what to download and how to convert it."""
    import torch

    from ..convert import fetch_to
    from ..weights import load_model

    cache = Path(torch.hub.get_dir()) / "checkpoints"
    pth = cache / "inception5h.pth"
    converted = cache / "inception5h.safetensors"
    if converted.is_file():
        try:
            return load_model(converted, arch=ARCH)
        except UserError:
            pass  # damaged: convert again
    if not pth.is_file():
        help_line = (f"download {URL} on a connected machine, then run 'googlenet convert --from inception5h "
                     f"inception5h.pth inception5h.safetensors' (add --labels imagenet_comp_graph_label_strings.txt "
                     f"for class names) and pass --weights inception5h.safetensors")
        fetch_to(URL, pth, timeout, help_line)
    model = from_file(pth)
    try:
        return convert_inception5h(pth, converted)
    except (OSError, UserError):
        return model
