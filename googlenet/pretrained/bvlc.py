"""BVLC's GoogLeNet (``bvlc_googlenet.caffemodel``, Caffe model zoo, unrestricted use) as the paper's ``googlenet``.

BVLC's network is exactly ours (it is what our model file follows), aux heads included. Its layers map one to one:

    conv1/7x7_s2 -> conv1           conv2/3x3_reduce -> conv2        conv2/3x3 -> conv3
    inception_{3a..5b}/{1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5, pool_proj} -> inception{..}.branch{1, 2.0, 2.1, 3.0,
    3.1, 4.1}
    loss1/{conv, fc, classifier} -> aux1.{conv, fc1, fc2}   loss2/... -> aux2   loss3/classifier -> fc

Each layer holds [weight, bias] in PyTorch's layout already (Caffe's convolutions are out x in x kh x kw, its inner
products out x in, flattened C-H-W as ``torch.flatten`` does). The file says nothing of its input; BVLC's
deploy.prototxt and model zoo page do: BGR channel order, pixels 0..255, per-channel mean (104, 117, 123) in BGR order,
no std, resize 256, centre crop 224; the 1000 classes in the sorted-synset order (torchvision's order).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from torch import nn

from ..errors import UserError
from ..fileio import printable
from ..models import create_model
from .caffe import first_mismatch, read_caffemodel
from .fetch import NETWORK_TIMEOUT_S, cached_pretrained, convert_help, save_converted

ARCH = "googlenet"
URL = "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel"
PREPROCESSING = {"input_size": 224, "resize_size": 256, "interpolation": "bilinear", "mean": [104.0, 117.0, 123.0],
                 "std": [1.0, 1.0, 1.0], "channel_order": "BGR", "pixel_range": 255}
BLOCKS = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
BRANCHES = {"1x1": "branch1", "3x3_reduce": "branch2.0", "3x3": "branch2.1", "5x5_reduce": "branch3.0",
            "5x5": "branch3.1", "pool_proj": "branch4.1"}
AUX = {"conv": "conv.conv", "fc": "fc1", "classifier": "fc2"}  # loss{1,2}/<layer> -> aux{1,2}.<module>


def layer_map(aux: bool = True) -> dict[str, str]:
    """BVLC layer name -> our module holding its weight and bias, in network order."""
    names = {"conv1/7x7_s2": "conv1.conv", "conv2/3x3_reduce": "conv2.conv", "conv2/3x3": "conv3.conv"}
    for block in BLOCKS:
        for caffe, ours in BRANCHES.items():
            names[f"inception_{block}/{caffe}"] = f"inception{block}.{ours}.conv"
    if aux:
        names.update({f"loss{i}/{caffe}": f"aux{i}.{ours}" for i in (1, 2) for caffe, ours in AUX.items()})
    names["loss3/classifier"] = "fc"
    return names


def from_caffemodel(path: str | os.PathLike, *, aux_logits: Optional[bool] = None,
                    class_names: Optional[list[str]] = None) -> nn.Module:
    """The ``googlenet`` model holding a BVLC-layout caffemodel's weights (eval mode, metadata attached).

    aux_logits: None keeps the aux heads when the file has them. A file of another network is refused with one
    line naming the first missing or misshapen layer.
    """
    net_name, layers = read_caffemodel(path, wanted=set(layer_map(True)))
    if "loss3/classifier" not in layers:
        raise UserError(f"{printable(path)} is not BVLC's GoogLeNet (net {net_name!r}): layer 'loss3/classifier' "
                        f"is missing")
    classifier = layers["loss3/classifier"][0]
    if classifier.dim() != 2 or classifier.shape[1] != 1024 or classifier.shape[0] < 1:
        raise UserError(f"{printable(path)}: layer 'loss3/classifier' has weight shape {list(classifier.shape)}, "
                        f"expected [classes, 1024]")
    num_classes = int(classifier.shape[0])
    aux_names = [f"loss{i}/{p}" for i in (1, 2) for p in AUX]
    missing = [name for name in aux_names if name not in layers]
    has_aux = not missing
    if aux_logits is None and 0 < len(missing) < len(aux_names):
        raise UserError(f"{printable(path)} has some aux-head layers but not {missing[0]!r}; convert with --drop-aux "
                        f"to leave the aux heads out")
    aux = has_aux if aux_logits is None else aux_logits
    if aux and not has_aux:
        raise UserError(f"{printable(path)} has no aux heads (loss1/*, loss2/*); convert with --drop-aux")
    model = create_model(ARCH, num_classes=num_classes, aux_logits=aux)
    state = model.state_dict()
    mapping = layer_map(aux)
    expected = {caffe: [tuple(state[f"{ours}.weight"].shape), tuple(state[f"{ours}.bias"].shape)]
                for caffe, ours in mapping.items()}
    if (problem := first_mismatch(expected, layers)) is not None:
        raise UserError(f"{printable(path)} is not BVLC's GoogLeNet (net {net_name!r}): {problem}")
    model.load_state_dict({f"{ours}.{kind}": t for caffe, ours in mapping.items()
                           for kind, t in zip(("weight", "bias"), layers[caffe])}, strict=True)
    if class_names is None and num_classes == 1000:
        from ..data.imagenet import imagenet_classes

        class_names = imagenet_classes()
    model.class_names = class_names
    model.preprocessing = dict(PREPROCESSING)
    return model.eval()


def convert_caffe(src: str | os.PathLike, dst: str | os.PathLike, *, aux_logits: Optional[bool] = None,
                  class_names: Optional[list[str]] = None) -> nn.Module:
    model = from_caffemodel(src, aux_logits=aux_logits, class_names=class_names)
    return save_converted(model, Path(src), dst, {"from": "caffe", "network": "bvlc_googlenet"}, arch=ARCH,
                          class_names=model.class_names, preprocessing=model.preprocessing)


def load_bvlc_pretrained(*, timeout: float = NETWORK_TIMEOUT_S) -> nn.Module:
    """BVLC's weights as ``googlenet`` (``--weights bvlc``), through the torch.hub cache or a download."""
    def convert(src: Path, dst: Path) -> nn.Module:
        try:
            return convert_caffe(src, dst)
        except OSError:  # a read-only cache: the model converted in memory
            return from_caffemodel(src)

    original = "bvlc_googlenet.caffemodel"
    return cached_pretrained(url=URL, original=original, converted="bvlc_googlenet.safetensors", arch=ARCH,
                             convert=convert, timeout=timeout,
                             help_line=convert_help(URL, "caffe", original, "bvlc_googlenet.safetensors"))
