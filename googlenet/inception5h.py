"""Google's inception5h GoogLeNet -> the project's weights file (arch ``googlenet_inception5h``).

Reads the PyTorch port's ``inception5h.pth`` (ProGamerGov's, used by lucent and neural-dream), a plain state dict
loaded with ``torch.load(weights_only=True)`` so a pickle carrying code is refused unrun. Its names are the
TensorFlow graph's (``conv2d0_pre_relu/conv``, ``mixed4a_3x3_bottleneck_pre_relu/conv``,
``softmax2_pre_activation/matmul``), with "/" written "_". The port has no aux heads; neither has the result.

Input convention of the graph (DeepDream's notebook): RGB, pixels 0..255, minus 117 on every channel, no std.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .errors import UserError
from .fileio import Unreadable, printable, read_bounded

ARCH = "googlenet_inception5h"
NUM_CLASSES = 1008
PREPROCESSING = {"input_size": 224, "resize_size": 256, "interpolation": "bilinear", "mean": [117.0] * 3,
                 "std": [1.0] * 3, "channel_order": "RGB", "pixel_range": 255, "grayscale": False}
LABELS_MAX_BYTES = 1 << 20  # imagenet_comp_graph_label_strings.txt is 10 KB

_BRANCHES = {"1x1": "branch1", "3x3_bottleneck": "branch2.0", "3x3": "branch2.1", "5x5_bottleneck": "branch3.0",
             "5x5": "branch3.1", "pool_reduce": "branch4.1"}
# The graph's layer names (the port's module names less "_pre_relu_conv") -> ours.
LAYERS = {"conv2d0": "conv1.conv", "conv2d1": "conv2.conv", "conv2d2": "conv3.conv",
          **{f"mixed{i}_{b}": f"inception{i}.{m}.conv" for i in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
             for b, m in _BRANCHES.items()}}


def port_key(ours: str) -> str:
    """Our state dict key -> the PyTorch port's."""
    module, suffix = ours.rsplit(".", 1)
    if module == "fc":
        return f"softmax2_pre_activation_matmul.{suffix}"
    graph = next(g for g, o in LAYERS.items() if o == module)
    return f"{graph}_pre_relu_conv.{suffix}"


def from_port_state_dict(state: dict[str, torch.Tensor], *, source: str) -> nn.Module:
    from .models import create_model
    from .weights import load_state_dict_checked

    with torch.device("meta"):
        model = create_model(ARCH, num_classes=NUM_CLASSES, aux_logits=False)
    ours = {}
    for key in model.state_dict():
        theirs = port_key(key)
        if theirs not in state:
            raise UserError(f"{source} is not inception5h: it has no {theirs}")
        ours[key] = state[theirs].float()
    load_state_dict_checked(model, ours, source=source, assign=True)
    return model.eval()


def read_labels(path: Optional[str | os.PathLike], n: int = NUM_CLASSES) -> list[str]:
    """Class names from ``imagenet_comp_graph_label_strings.txt`` (one per line, index = output), padded with
    ``class_<i>`` to ``n`` and made unique (the file repeats some names) by appending the index; or ``class_<i>``."""
    if path is None:
        return [f"class_{i}" for i in range(n)]
    try:
        text = read_bounded(path, limit=LABELS_MAX_BYTES).decode("utf-8")
    except Unreadable as e:
        raise UserError(f"cannot read labels {printable(path)}: {e}") from None
    except UnicodeDecodeError:
        raise UserError(f"labels {printable(path)} are not UTF-8 text") from None
    lines = [line.strip() for line in text.splitlines()]
    if len(lines) > n:
        raise UserError(f"labels {printable(path)} has {len(lines)} lines for {n} classes")
    names, seen = [], set()
    for i in range(n):
        name = lines[i] if i < len(lines) and lines[i] else f"class_{i}"
        if name in seen:
            name = f"{name} ({i})"
        seen.add(name)
        names.append(name)
    return names


def convert_inception5h(src: str | os.PathLike, dst: str | os.PathLike, *,
                        labels: Optional[str | os.PathLike] = None) -> nn.Module:
    """``googlenet convert --from inception5h SRC.pth DST``: writes DST atomically, returns the model with DST's
    metadata attached."""
    from .convert import _sha256, read_checkpoint
    from .weights import attach_metadata, read_metadata, save_model

    src = Path(src)
    if src.suffix == ".pb":
        raise UserError(f"{src}: reading the TensorFlow GraphDef (.pb) is not implemented yet; convert the PyTorch "
                        f"port inception5h.pth instead")
    model = from_port_state_dict(read_checkpoint(src), source=str(src))
    names = read_labels(labels)
    digest = _sha256(src)
    save_model(model, dst, class_names=names, preprocessing=dict(PREPROCESSING),
               source={"from": "inception5h", "file": src.name, "sha256": digest})
    attach_metadata(model, read_metadata(dst))
    return model


__all__ = ["PREPROCESSING", "convert_inception5h", "from_port_state_dict", "port_key", "read_labels"]
