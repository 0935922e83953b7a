"""BVLC Caffe's ``bvlc_googlenet.caffemodel`` -> the project's weights file (arch ``googlenet``, aux heads included).

A caffemodel is a binary protobuf ``NetParameter``. Caffe is not needed to read it: the few fields that carry
weights are decoded by ``googlenet.protowire`` (a bounded wire-format reader; why not the protobuf package is said
there). The schema subset used:

    NetParameter      100 layer (LayerParameter), 2 layers (legacy V1LayerParameter)
    LayerParameter    1 name, 2 type, 7 blobs (BlobProto)
    V1LayerParameter  4 name, 5 type (enum), 6 blobs
    BlobProto         7 shape (BlobShape: 1 dim, packed int64), 5 data (packed float), legacy 1-4 num/channels/
                      height/width

BVLC's layer names map one to one onto ``googlenet``'s modules (the network is the paper's, which ours is). Its
input convention is Caffe's: BGR channel order, pixels 0..255, minus the per-channel mean (104, 117, 123) in BGR
order, no std (models/bvlc_googlenet/train_val.prototxt); that is written into the file's ``preprocessing`` so
every command feeds it so, with no flag.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .fileio import open_weights_file
from .protowire import WireError, fields, varint

ARCH = "googlenet"
# Caffe's train_val.prototxt for bvlc_googlenet: mean_value 104 117 123 (B, G, R), crop 224 from 256 x 256.
BVLC_PREPROCESSING = {"input_size": 224, "resize_size": 256, "interpolation": "bilinear",
                      "mean": [104.0, 117.0, 123.0], "std": [1.0, 1.0, 1.0], "channel_order": "BGR",
                      "pixel_range": 255, "grayscale": False}

_INCEPTION_BRANCHES = {"1x1": "branch1", "3x3_reduce": "branch2.0", "3x3": "branch2.1", "5x5_reduce": "branch3.0",
                       "5x5": "branch3.1", "pool_proj": "branch4.1"}
_INCEPTIONS = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
TRUNK_LAYERS = {"conv1/7x7_s2": "conv1.conv", "conv2/3x3_reduce": "conv2.conv", "conv2/3x3": "conv3.conv",
                **{f"inception_{i}/{b}": f"inception{i}.{m}.conv" for i in _INCEPTIONS
                   for b, m in _INCEPTION_BRANCHES.items()},
                "loss3/classifier": "fc"}
AUX_LAYERS = {f"loss{n}/{b}": f"aux{n}.{m}" for n in (1, 2)
              for b, m in (("conv", "conv.conv"), ("fc", "fc1"), ("classifier", "fc2"))}


def _blob(buf: memoryview) -> tuple[tuple[int, ...], np.ndarray]:
    """A BlobProto -> (shape, float32 data)."""
    shape: list[int] = []
    legacy = {1: 1, 2: 1, 3: 1, 4: 1}
    has_legacy = False
    chunks: list[np.ndarray] = []
    for number, wire, value in fields(buf):
        if number == 7 and wire == 2:  # BlobShape
            for n, w, v in fields(value):
                if n == 1 and w == 2:  # packed dims
                    pos = 0
                    while pos < len(v):
                        d, pos = varint(v, pos)
                        shape.append(d)
                elif n == 1 and w == 0:
                    shape.append(v)
        elif number == 5 and wire == 2:  # packed float data
            if len(value) % 4:
                raise WireError("float data not a multiple of 4 bytes")
            chunks.append(np.frombuffer(value, dtype="<f4"))
        elif number == 5 and wire == 5:  # unpacked float
            chunks.append(np.frombuffer(value, dtype="<f4"))
        elif number in legacy and wire == 0:
            legacy[number], has_legacy = value, True
    if not shape and has_legacy:
        shape = [legacy[1], legacy[2], legacy[3], legacy[4]]
    data = chunks[0] if len(chunks) == 1 else np.concatenate(chunks) if chunks else np.zeros(0, "<f4")
    return tuple(shape), data


def read_caffemodel(buf: bytes | memoryview) -> dict[str, list[tuple[tuple[int, ...], np.ndarray]]]:
    """Layer name -> its blobs (shape, data), for every layer that has blobs (``layer`` and legacy ``layers``)."""
    layers: dict[str, list] = {}
    for number, wire, value in fields(memoryview(buf)):
        if wire != 2 or number not in (100, 2):
            continue
        name_field, blob_field = (1, 7) if number == 100 else (4, 6)
        name, blobs = None, []
        for n, w, v in fields(value):
            if n == name_field and w == 2:
                name = bytes(v).decode("utf-8", "replace")
            elif n == blob_field and w == 2:
                blobs.append(_blob(v))
        if name is not None and blobs:
            layers[name] = blobs
    return layers


def _fit(layer: str, shape: tuple[int, ...], data: np.ndarray, want: tuple[int, ...]) -> torch.Tensor:
    """The blob as a tensor of shape ``want``; legacy 4-d shapes of fc weights/biases (1 x 1 x out x in) squeeze."""
    squeezed = tuple(shape)
    while len(squeezed) > len(want) and squeezed[0] == 1:
        squeezed = squeezed[1:]
    if squeezed != tuple(want) or data.size != int(np.prod(want)):
        raise UserError(f"layer {layer} is misshapen for googlenet: blob shape {tuple(shape)} with {data.size:,} "
                        f"values, expected {tuple(want)}")
    return torch.from_numpy(data.reshape(want).astype(np.float32))


def state_dict_from_layers(layers: dict, *, source: str) -> tuple[dict[str, torch.Tensor], int, bool]:
    """BVLC layer blobs -> (googlenet state dict, number of classes, whether the aux heads are in)."""
    from .models import create_model

    if "loss3/classifier" not in layers:
        raise UserError(f"{source} is not BVLC GoogLeNet: it has no layer loss3/classifier")
    num_classes = int(layers["loss3/classifier"][0][1].size // 1024) or 1
    aux = all(name in layers for name in AUX_LAYERS)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in create_model(ARCH, num_classes=num_classes,
                                                             aux_logits=aux).state_dict().items()}
    state = {}
    for caffe_name, ours in {**TRUNK_LAYERS, **(AUX_LAYERS if aux else {})}.items():
        blobs = layers.get(caffe_name)
        if blobs is None:
            raise UserError(f"{source} is not BVLC GoogLeNet: it has no layer {caffe_name}")
        if len(blobs) != 2:
            raise UserError(f"layer {caffe_name} in {source} has {len(blobs)} blobs, expected weights and bias")
        for (shape, data), suffix in zip(blobs, ("weight", "bias")):
            state[f"{ours}.{suffix}"] = _fit(caffe_name, shape, data, shapes[f"{ours}.{suffix}"])
    return state, num_classes, aux


def from_caffemodel(path: str | os.PathLike) -> tuple[nn.Module, str]:
    """The ``googlenet`` model (eval mode, BVLC preprocessing and class names attached) and the file's sha256."""
    from .data.imagenet import imagenet_classes
    from .models import create_model
    from .weights import load_state_dict_checked

    path = Path(path)
    with open_weights_file(path, "caffemodel") as (f, _):
        raw = f.read()  # bounded by GOOGLENET_MAX_WEIGHTS_BYTES; every blob below is a view of it
    try:
        layers = read_caffemodel(raw)
    except WireError as e:
        raise UserError(f"{path} is not a readable caffemodel (binary NetParameter): {e}") from None
    if not layers:
        raise UserError(f"{path} is not a caffemodel: no layer with weights in it")
    state, num_classes, aux = state_dict_from_layers(layers, source=str(path))
    with torch.device("meta"):
        model = create_model(ARCH, num_classes=num_classes, aux_logits=aux)
    load_state_dict_checked(model, state, source=str(path), assign=True)
    model.class_names = imagenet_classes() if num_classes == 1000 else None
    model.preprocessing = dict(BVLC_PREPROCESSING)
    return model.eval(), hashlib.sha256(raw).hexdigest()


def convert_caffe(src: str | os.PathLike, dst: str | os.PathLike) -> nn.Module:
    """``googlenet convert --from caffe SRC DST``: writes DST atomically, returns the model with DST's metadata."""
    from .weights import attach_metadata, read_metadata, save_model

    model, digest = from_caffemodel(src)
    save_model(model, dst, class_names=model.class_names, preprocessing=model.preprocessing,
               source={"from": "caffe", "file": Path(src).name, "sha256": digest})
    attach_metadata(model, read_metadata(dst))
    return model


__all__ = ["AUX_LAYERS", "BVLC_PREPROCESSING", "TRUNK_LAYERS", "convert_caffe", "from_caffemodel",
           "read_caffemodel"]
