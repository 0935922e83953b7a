"""Google's inception5h GoogLeNet -> the project's weights file (arch ``googlenet_inception5h``).

Reads the PyTorch port's ``inception5h.pth`` (ProGamerGov's, used by lucent and neural-dream), a plain state dict
loaded with ``torch.load(weights_only=True)`` so a pickle carrying code is refused unrun. Its names are the
TensorFlow graph's (``conv2d0_pre_relu/conv``, ``mixed4a_3x3_bottleneck_pre_relu/conv``,
``softmax2_pre_activation/matmul``), with "/" written "_". The port has no aux heads; neither has the result.

Or reads the original TensorFlow graph ``tensorflow_inception_graph.pb`` (a binary ``GraphDef``) without TensorFlow:
its Const nodes ``<layer>_w`` / ``<layer>_b`` (``conv2d0_w``, ``mixed4a_3x3_w``, ``softmax2_w``) hold the weights,
convolutions as H x W x in x out, the classifier as in x out; they are transposed to PyTorch's layout.

Input convention of the graph (DeepDream's notebook): RGB, pixels 0..255, minus 117 on every channel, no std.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..fileio import Unreadable, open_weights_file, printable, read_bounded
from ..models import ARCHS, create_model
from ..protowire import WireError, fields
from ..weights import load_state_dict_checked
from .fetch import NETWORK_TIMEOUT_S, cached_pretrained, convert_help, save_converted
from .torchvision_pth import read_checkpoint

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


def _lrn_attrs(attrs: dict[str, memoryview], path: Path, name: str) -> dict[str, float]:
    """depth_radius (AttrValue.i, field 3), bias / alpha / beta (AttrValue.f, field 4, a little-endian float32)."""
    out: dict[str, float] = {}
    for key, field_no in (("depth_radius", 3), ("bias", 4), ("alpha", 4), ("beta", 4)):
        if key not in attrs:
            raise UserError(f"{path}: LRN node {name} has no {key} attribute")
        value = next((v for n, w, v in fields(attrs[key]) if n == field_no and w == (0 if field_no == 3 else 5)), None)
        if value is None:
            raise UserError(f"{path}: LRN node {name}'s {key} is not a{'n integer' if field_no == 3 else ' float'}")
        out[key] = int(value) if field_no == 3 else struct.unpack("<f", value)[0]
    return out


def read_graphdef(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, float]]]:
    """The float Const tensors of a GraphDef under the port's names (conv weights OIHW, classifier out x in), and
    the attributes of its LRN nodes by node name (TensorFlow's depth_radius, bias, alpha, beta)."""
    with open_weights_file(path, "GraphDef") as (f, _):
        raw = memoryview(f.read())  # bounded by GOOGLENET_MAX_WEIGHTS_BYTES; tensors below are views of it
    consts: dict[str, torch.Tensor] = {}
    lrns: dict[str, dict[str, float]] = {}
    try:
        for number, wire, node in fields(raw):
            if number != 1 or wire != 2:  # GraphDef.node
                continue
            name, op, attrs = None, None, {}
            for n, w, v in fields(node):  # NodeDef: 1 name, 2 op, 5 attr (map entry: 1 key, 2 AttrValue)
                if n == 1 and w == 2:
                    name = bytes(v).decode("utf-8", "replace")
                elif n == 2 and w == 2:
                    op = bytes(v).decode("utf-8", "replace")
                elif n == 5 and w == 2:
                    entry = {k: val for k, kw, val in fields(v) if kw == 2}
                    if 1 in entry and 2 in entry:
                        attrs[bytes(entry[1]).decode("utf-8", "replace")] = entry[2]
            if op == "LRN":
                lrns[printable(name or "?")] = _lrn_attrs(attrs, path, printable(name or "?"))
                continue
            tensor = next((val for k, kw, val in fields(attrs.get("value", b"")) if k == 8 and kw == 2), None)
            if op != "Const" or tensor is None or not name or not name.endswith(("_w", "_b")):
                continue
            dtype, shape, content, floats = 0, [], None, []
            for n, w, v in fields(tensor):  # TensorProto: 1 dtype, 2 shape, 4 tensor_content, 5 float_val
                if n == 1 and w == 0:
                    dtype = v
                elif n == 2 and w == 2:
                    for dn, dw, dim in fields(v):  # TensorShapeProto.dim -> Dim.size (1)
                        if dn == 2 and dw == 2:
                            shape.append(next((x for k, kw, x in fields(dim) if k == 1 and kw == 0), 0))
                elif n == 4 and w == 2:
                    content = v
                elif n == 5 and w == 2:
                    floats.append(v)
            if dtype != 1:  # DT_FLOAT
                continue
            raw_floats = content if content is not None else b"".join(bytes(x) for x in floats)
            if len(raw_floats) % 4:
                raise UserError(f"{path}: Const {name} holds {len(raw_floats):,} bytes, not a whole number of floats")
            data = np.frombuffer(raw_floats, "<f4")
            if data.size != math.prod(shape):  # Python integers: np.prod wraps around past 2^63
                raise UserError(f"{path}: Const {name} has {data.size:,} values for shape {tuple(shape)}")
            t = torch.from_numpy(data.reshape(shape).copy())
            if t.ndim == 4:
                t = t.permute(3, 2, 0, 1).contiguous()  # H x W x in x out -> out x in x H x W
            elif t.ndim == 2:
                t = t.t().contiguous()  # in x out -> out x in
            layer = name[:-2]
            key = "softmax2_pre_activation_matmul" if layer == "softmax2" else f"{layer}_pre_relu_conv"
            consts[f"{key}.{'weight' if name[-1] == 'w' else 'bias'}"] = t
    except WireError as e:
        raise UserError(f"{path} is not a readable TensorFlow GraphDef: {e}") from None
    if not consts:
        raise UserError(f"{path} is not inception5h's GraphDef: no float Const nodes named <layer>_w / <layer>_b")
    return consts, lrns


def check_graph_lrn(lrns: dict[str, dict[str, float]], source: str) -> None:
    """Each LRN node of the graph must be the arch's LRN: PyTorch's (size, alpha, beta, k) is TensorFlow's
    (2 depth_radius + 1, alpha (2 depth_radius + 1), beta, bias), TensorFlow summing alpha over the window where
    PyTorch averages it. A graph whose LRN differs would convert to a model that computes something else."""
    size, alpha, beta, k = ARCHS[ARCH].lrn
    for name, a in sorted(lrns.items()):
        window = 2 * a["depth_radius"] + 1
        theirs = (window, a["alpha"] * window, a["beta"], a["bias"])
        if window != size or not all(math.isclose(x, y, rel_tol=1e-6) for x, y in zip(theirs[1:], (alpha, beta, k))):
            raise UserError(f"{source}: LRN node {name} (depth_radius {a['depth_radius']}, bias {a['bias']:g}, alpha "
                            f"{a['alpha']:g}, beta {a['beta']:g}) is not {ARCH}'s LRN (size {size}, alpha {alpha:g}, "
                            f"beta {beta:g}, k {k:g})")


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
    src = Path(src)
    if src.suffix == ".pb":
        state, lrns = read_graphdef(src)
        check_graph_lrn(lrns, str(src))
    else:
        state = read_checkpoint(src)
    model = from_port_state_dict(state, source=str(src))
    return save_converted(model, src, dst, {"from": "inception5h"}, class_names=read_labels(labels),
                          preprocessing=dict(PREPROCESSING))


# lucent's model zoo address for ProGamerGov's PyTorch port of tensorflow_inception_graph.pb.
URL = "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth"


def load_inception5h_pretrained(*, timeout: float = NETWORK_TIMEOUT_S) -> nn.Module:
    """``--weights inception5h``: the PyTorch port's ``inception5h.pth`` as ``googlenet_inception5h``, through the
    torch.hub cache or a download from lucent's model-zoo address."""
    return cached_pretrained(url=URL, original="inception5h.pth", converted="googlenet_inception5h.safetensors",
                             arch=ARCH, convert=convert_inception5h, timeout=timeout,
                             help_line=convert_help(URL, "inception5h", "inception5h.pth", "inception5h.safetensors"))


__all__ = ["PREPROCESSING", "check_graph_lrn", "convert_inception5h", "from_port_state_dict",
           "load_inception5h_pretrained", "port_key", "read_graphdef", "read_labels"]
