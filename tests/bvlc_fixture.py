"""BVLC's GoogLeNet written from its own description (models/bvlc_googlenet/deploy.prototxt in BVLC/caffe), not
from our model: the deploy prototxt as text for OpenCV's Caffe importer, and random weights of the shapes that
prototxt implies, written as a .caffemodel."""

from __future__ import annotations

import torch

# name: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj), Table 1.
INCEPTION = {"3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64), "4a": (192, 96, 208, 16, 48, 64),
             "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
             "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
             "5b": (384, 192, 384, 48, 128, 128)}


class Proto:
    def __init__(self) -> None:
        self.text, self.shapes = [], {}

    def conv(self, name, bottom, cin, cout, k, stride=1, pad=0):
        self.text.append(f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
                         f'convolution_param {{ num_output: {cout} kernel_size: {k} stride: {stride} pad: {pad} }} }}')
        self.text.append(f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}')
        self.shapes[name] = [(cout, cin, k, k), (cout,)]
        return name

    def fc(self, name, bottom, cin, cout, relu=True):
        self.text.append(f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}" '
                         f'inner_product_param {{ num_output: {cout} }} }}')
        if relu:
            self.text.append(f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}')
        self.shapes[name] = [(cout, cin), (cout,)]
        return name

    def pool(self, name, bottom, kind, k, stride, pad=0):
        self.text.append(f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" pooling_param '
                         f'{{ pool: {kind} kernel_size: {k} stride: {stride} pad: {pad} }} }}')
        return name

    def lrn(self, name, bottom):
        self.text.append(f'layer {{ name: "{name}" type: "LRN" bottom: "{bottom}" top: "{name}" lrn_param '
                         f'{{ local_size: 5 alpha: 0.0001 beta: 0.75 }} }}')
        return name


def deploy(input_size: int, num_classes: int = 1000) -> tuple[str, dict]:
    p = Proto()
    p.text.append(f'name: "GoogleNet" layer {{ name: "data" type: "Input" top: "data" input_param {{ shape: '
                  f'{{ dim: 1 dim: 3 dim: {input_size} dim: {input_size} }} }} }}')
    x = p.conv("conv1/7x7_s2", "data", 3, 64, 7, 2, 3)
    x = p.pool("pool1/3x3_s2", x, "MAX", 3, 2)
    x = p.lrn("pool1/norm1", x)
    x = p.conv("conv2/3x3_reduce", x, 64, 64, 1)
    x = p.conv("conv2/3x3", x, 64, 192, 3, 1, 1)
    x = p.lrn("conv2/norm2", x)
    x = p.pool("pool2/3x3_s2", x, "MAX", 3, 2)
    cin = 192
    for block, (c1, r3, c3, r5, c5, pp) in INCEPTION.items():
        n = f"inception_{block}"
        a = p.conv(f"{n}/1x1", x, cin, c1, 1)
        b = p.conv(f"{n}/3x3", p.conv(f"{n}/3x3_reduce", x, cin, r3, 1), r3, c3, 3, 1, 1)
        c = p.conv(f"{n}/5x5", p.conv(f"{n}/5x5_reduce", x, cin, r5, 1), r5, c5, 5, 1, 2)
        d = p.conv(f"{n}/pool_proj", p.pool(f"{n}/pool", x, "MAX", 3, 1, 1), cin, pp, 1)
        p.text.append(f'layer {{ name: "{n}/output" type: "Concat" bottom: "{a}" bottom: "{b}" bottom: "{c}" '
                      f'bottom: "{d}" top: "{n}/output" }}')
        x, cin = f"{n}/output", c1 + c3 + c5 + pp
        if block in ("4a", "4d") and input_size == 224:  # the aux heads' 5x5/3 pools fit 224
            i = 1 if block == "4a" else 2
            h = p.pool(f"loss{i}/ave_pool", x, "AVE", 5, 3)
            h = p.conv(f"loss{i}/conv", h, cin, 128, 1)
            h = p.fc(f"loss{i}/fc", h, 2048, 1024)
            p.fc(f"loss{i}/classifier", h, 1024, num_classes, relu=False)
        if block in ("3b", "4e"):
            x = p.pool(f"pool{3 if block == '3b' else 4}/3x3_s2", x, "MAX", 3, 2)
    if input_size == 224:
        x = p.pool("pool5/7x7_s1", x, "AVE", 7, 1)
    else:  # deploy.prototxt's 7x7 pool fits 224 only; other sizes pool globally (as our adaptive pool does)
        p.text.append(f'layer {{ name: "pool5/7x7_s1" type: "Pooling" bottom: "{x}" top: "pool5/7x7_s1" '
                      f'pooling_param {{ pool: AVE global_pooling: true }} }}')
        x = "pool5/7x7_s1"
    p.fc("loss3/classifier", x, 1024, num_classes, relu=False)
    return "\n".join(p.text) + "\n", p.shapes


def random_weights(shapes: dict, seed: int = 0) -> dict[str, list[torch.Tensor]]:
    """Weights of the given shapes, scaled so activations stay O(1) through 22 layers (He-style)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, (w, b) in shapes.items():
        fan_in = int(torch.tensor(w[1:]).prod())
        out[name] = [torch.randn(w, generator=g) * (2.0 / fan_in) ** 0.5, torch.randn(b, generator=g) * 0.1]
    return out
