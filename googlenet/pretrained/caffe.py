"""Caffe's binary ``NetParameter``, read with the ``protobuf`` package from the few message types it needs.

The schema is the subset of caffe.proto (BVLC/caffe, src/caffe/proto/caffe.proto) that holds learned weights:

    NetParameter      1 name, 2 layers (V1LayerParameter, legacy), 100 layer (LayerParameter)
    LayerParameter    1 name, 2 type, 7 blobs (BlobProto)
    V1LayerParameter  4 name, 5 type (enum), 6 blobs (BlobProto)
    BlobProto         1 num, 2 channels, 3 height, 4 width (legacy shape), 5 data (packed float), 7 shape
    BlobShape         1 dim (packed int64)

Every other field is skipped as unknown, as protobuf does. protobuf checks each length field against the bytes that
remain, so a file that claims a gigabyte-long blob fails to parse instead of allocating it; the file itself is read
through ``googlenet.fileio`` (a regular file, at most GOOGLENET_MAX_WEIGHTS_BYTES).
"""

from __future__ import annotations

import functools
import math
import os
from typing import Optional

import numpy as np
import torch

from ..errors import UserError, one_line
from ..fileio import WEIGHTS_BYTES_ENV, Unreadable, max_weights_bytes, printable, read_bounded


@functools.lru_cache(maxsize=1)
def messages() -> dict:
    """The message classes of the schema above, built from a FileDescriptorProto declared here."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="googlenet_caffe_subset.proto", package="googlenet_caffe",
                                             syntax="proto2")

    def message(name: str, *fields: tuple) -> None:
        """fields: (number, name, a scalar type or a message's name, repeated); repeated scalars are packed."""
        m = fdp.message_type.add(name=name)
        for number, fname, ftype, repeated in fields:
            f = m.field.add(name=fname, number=number, type=F.TYPE_MESSAGE if isinstance(ftype, str) else ftype,
                            label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if isinstance(ftype, str):
                f.type_name = f".googlenet_caffe.{ftype}"
            elif repeated:
                f.options.packed = True

    i32, string = F.TYPE_INT32, F.TYPE_STRING
    message("BlobShape", (1, "dim", F.TYPE_INT64, True))
    message("BlobProto", (1, "num", i32, False), (2, "channels", i32, False), (3, "height", i32, False),
            (4, "width", i32, False), (5, "data", F.TYPE_FLOAT, True), (7, "shape", "BlobShape", False))
    message("LayerParameter", (1, "name", string, False), (2, "type", string, False), (7, "blobs", "BlobProto", True))
    # V1's type is an enum in caffe.proto; read as an int (the same wire format) to need no enum table.
    message("V1LayerParameter", (4, "name", string, False), (5, "type", i32, False), (6, "blobs", "BlobProto", True))
    message("NetParameter", (1, "name", string, False), (2, "layers", "V1LayerParameter", True),
            (100, "layer", "LayerParameter", True))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"googlenet_caffe.{m.name}"))
            for m in fdp.message_type}


def blob_to_tensor(blob, where: str) -> torch.Tensor:
    """A BlobProto as a float32 tensor of its declared shape (``shape.dim``, or legacy num/channels/height/width)."""
    if blob.HasField("shape"):
        shape = [int(d) for d in blob.shape.dim]
    else:
        shape = [int(blob.num), int(blob.channels), int(blob.height), int(blob.width)]
        while len(shape) > 1 and shape[0] == 1:  # legacy 4-D shapes pad with leading 1s (an FC bias is 1x1x1xN)
            shape = shape[1:]
    if any(d < 0 for d in shape):
        raise UserError(f"{where}: negative blob dimension {shape}")
    count = math.prod(shape)  # Python integers: np.prod wraps around past 2^63 (a [2^32, 2^32] blob "holds 0")
    if count != len(blob.data):
        raise UserError(f"{where}: blob declares shape {shape} ({count} values) but holds {len(blob.data)}")
    return torch.from_numpy(np.asarray(blob.data, dtype=np.float32).reshape(shape).copy())


def read_caffemodel(path: str | os.PathLike, wanted: Optional[set[str]] = None
                    ) -> tuple[str, dict[str, list[torch.Tensor]]]:
    """(net name, {layer name: [blob tensors]}) of a ``.caffemodel``; layers without blobs are left out.

    Accepts the ``layer`` field and the legacy V1 ``layers`` field. Raises a one-line UserError for anything that
    is not a readable Caffe NetParameter. wanted: only these layers' blobs become tensors (the others are skipped
    unconverted: a 4 MB file of two million empty blobs took 1.3 GB as tensors).
    """
    from google.protobuf.message import DecodeError

    try:
        data = read_bounded(path, limit=max_weights_bytes(), env=WEIGHTS_BYTES_ENV)
    except Unreadable as e:
        if str(e) == "file not found":
            raise UserError(f"caffemodel not found: {printable(path)}") from None
        raise UserError(f"cannot read caffemodel {printable(path)}: {e}") from None
    net = messages()["NetParameter"]()
    try:
        net.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise UserError(f"{printable(path)} is not a Caffe model (NetParameter): {one_line(e, 200)}") from None
    finally:
        del data
    layers: dict[str, list[torch.Tensor]] = {}
    for layer in list(net.layer) + list(net.layers):
        if len(layer.blobs) == 0 or (wanted is not None and str(layer.name) not in wanted):
            continue
        name = str(layer.name)
        if name in layers:
            raise UserError(f"{printable(path)}: layer {name!r} appears twice")
        if len(layer.blobs) > 2:  # every weighted Caffe layer of GoogLeNet has a weight and a bias
            raise UserError(f"{printable(path)}: layer {name!r} has {len(layer.blobs)} blobs, expected weight and bias")
        layers[name] = [blob_to_tensor(b, f"{printable(path)}: layer {name!r}") for b in layer.blobs]
    if not layers:
        raise UserError(f"{printable(path)} holds no layer with weights: not a trained Caffe model")
    return str(net.name), layers


def write_caffemodel(path: str | os.PathLike, layers: dict[str, list[torch.Tensor]], *, name: str = "",
                     legacy: bool = False, legacy_shapes: bool = False) -> None:
    """Writes ``layers`` as a Caffe NetParameter (tests and tools: a caffemodel without Caffe).

    legacy: V1 ``layers`` field; legacy_shapes: num/channels/height/width instead of ``shape``."""
    net = messages()["NetParameter"](name=name)
    for layer_name, blobs in layers.items():
        layer = (net.layers if legacy else net.layer).add(name=layer_name, type=4 if legacy else "Convolution")
        for t in blobs:
            blob = layer.blobs.add()
            if legacy_shapes:
                dims = [1] * (4 - t.dim()) + list(t.shape)
                blob.num, blob.channels, blob.height, blob.width = (int(d) for d in dims)
            else:
                blob.shape.dim.extend(int(d) for d in t.shape)
            blob.data.extend(t.detach().float().reshape(-1).tolist())
    with open(path, "wb") as f:
        f.write(net.SerializeToString())


def first_mismatch(expected: dict[str, list[tuple[int, ...]]], layers: dict[str, list[torch.Tensor]]) -> Optional[str]:
    """The first expected layer that is missing or misshapen, as a sentence; None when all fit."""
    for name, shapes in expected.items():
        if name not in layers:
            return f"layer {name!r} is missing"
        got, want = [tuple(t.shape) for t in layers[name]], [tuple(s) for s in shapes]
        if got != want:
            return f"layer {name!r} has blob shapes {got}, expected {want}"
    return None
