"""TensorFlow's frozen ``GraphDef`` (``tensorflow_inception_graph.pb``): the float Const nodes as tensors, parsed with
the ``protobuf`` package from a schema subset declared here (no TensorFlow needed).

Only the fields a frozen graph's weights need: GraphDef.node, NodeDef.name/op/attr, AttrValue.tensor and
TensorProto's dtype, shape and values (``tensor_content`` bytes or ``float_val``). NodeDef's ``map<string,
AttrValue> attr`` is declared as its wire form, a repeated (key, value) entry message.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

from ..errors import UserError, one_line
from ..fileio import WEIGHTS_BYTES_ENV, Unreadable, max_weights_bytes, printable, read_bounded

DT_FLOAT = 1  # tensorflow/core/framework/types.proto


@functools.lru_cache(maxsize=1)
def messages() -> dict:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="googlenet_tf_subset.proto", package="googlenet_tf", syntax="proto3")

    def message(name: str, *fields: tuple) -> None:
        m = fdp.message_type.add(name=name)
        for number, fname, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".googlenet_tf.{type_name}"

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("Dim", (1, "size", F.TYPE_INT64, opt, None))
    message("TensorShapeProto", (2, "dim", F.TYPE_MESSAGE, rep, "Dim"))
    message("TensorProto", (1, "dtype", F.TYPE_INT32, opt, None),
            (2, "tensor_shape", F.TYPE_MESSAGE, opt, "TensorShapeProto"),
            (4, "tensor_content", F.TYPE_BYTES, opt, None), (5, "float_val", F.TYPE_FLOAT, rep, None))
    message("AttrValue", (8, "tensor", F.TYPE_MESSAGE, opt, "TensorProto"))
    message("AttrEntry", (1, "key", F.TYPE_STRING, opt, None), (2, "value", F.TYPE_MESSAGE, opt, "AttrValue"))
    message("NodeDef", (1, "name", F.TYPE_STRING, opt, None), (2, "op", F.TYPE_STRING, opt, None),
            (5, "attr", F.TYPE_MESSAGE, rep, "AttrEntry"))
    message("GraphDef", (1, "node", F.TYPE_MESSAGE, rep, "NodeDef"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    names = ("Dim", "TensorShapeProto", "TensorProto", "AttrValue", "AttrEntry", "NodeDef", "GraphDef")
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"googlenet_tf.{n}")) for n in names}


def tensor_to_torch(t, where: str) -> torch.Tensor:
    shape = [int(d.size) for d in t.tensor_shape.dim]
    if any(d < 0 for d in shape):
        raise UserError(f"{where}: negative dimension {shape}")
    count = int(np.prod(shape)) if shape else 1
    if t.tensor_content:
        if len(t.tensor_content) != 4 * count:
            raise UserError(f"{where}: shape {shape} needs {4 * count} bytes, the tensor holds {len(t.tensor_content)}")
        values = np.frombuffer(t.tensor_content, dtype="<f4")
    elif len(t.float_val) in (1, count):  # TensorFlow stores a constant fill as one value
        values = np.asarray(t.float_val, dtype=np.float32)
        if len(values) == 1 and count > 1:
            values = np.full(count, values[0], dtype=np.float32)
    else:
        raise UserError(f"{where}: shape {shape} but {len(t.float_val)} values")
    return torch.from_numpy(values.reshape(shape).copy())


def read_graphdef(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """{Const node name: float32 tensor (TensorFlow's layout)} of a frozen GraphDef; one-line UserError otherwise."""
    from google.protobuf.message import DecodeError

    try:
        data = read_bounded(path, limit=max_weights_bytes(), env=WEIGHTS_BYTES_ENV)
    except Unreadable as e:
        raise UserError(f"cannot read graph {printable(path)}: {e}") from None
    graph = messages()["GraphDef"]()
    try:
        graph.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise UserError(f"{printable(path)} is not a TensorFlow GraphDef: {one_line(e, 200)}") from None
    finally:
        del data
    consts = {}
    for node in graph.node:
        if node.op != "Const":
            continue
        value = next((a.value for a in node.attr if a.key == "value"), None)
        if value is None or not value.HasField("tensor") or value.tensor.dtype != DT_FLOAT:
            continue
        consts[str(node.name)] = tensor_to_torch(value.tensor, f"{printable(path)}: node {str(node.name)!r}")
    if not consts:
        raise UserError(f"{printable(path)} holds no float Const node: not a frozen TensorFlow graph")
    return consts


def write_graphdef(path: str | os.PathLike, consts: dict[str, torch.Tensor]) -> None:
    """Writes ``consts`` as Const nodes of a GraphDef (tests and tools: a .pb without TensorFlow)."""
    m = messages()
    graph = m["GraphDef"]()
    for name, t in consts.items():
        node = graph.node.add(name=name, op="Const")
        entry = node.attr.add(key="value")
        entry.value.tensor.dtype = DT_FLOAT
        entry.value.tensor.tensor_shape.dim.extend(m["Dim"](size=int(d)) for d in t.shape)
        entry.value.tensor.tensor_content = t.detach().float().contiguous().numpy().astype("<f4").tobytes()
    with open(path, "wb") as f:
        f.write(graph.SerializeToString())
