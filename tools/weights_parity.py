"""Figures of docs/weights.md: converted weights against independent engines, random weights.

BVLC: a caffemodel written here in Caffe's wire format, converted by ``googlenet convert --from caffe``, against
OpenCV's Caffe importer on BVLC's deploy layer list; inception5h: the converted port against lucent's InceptionV1
with the graph's LRN. Needs the test extras and torch-lucent. Run: PYTHONPATH=. python tools/weights_parity.py
"""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.*
import cv2  # noqa: E402

from googlenet.cli import main  # noqa: E402
from googlenet.data.transforms import model_input  # noqa: E402
from googlenet.models import create_model  # noqa: E402
from googlenet.pretrained.bvlc import PREPROCESSING, layer_map  # noqa: E402
from googlenet.weights import load_model  # noqa: E402
from tests.protowriter import field, varint  # noqa: E402
from tests.test_inception5h import lucent_inceptionv1, randomise_  # noqa: E402

INCEPTIONS = {"3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64), "4a": (192, 96, 208, 16, 48, 64),
              "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
              "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
              "5b": (384, 192, 384, 48, 128, 128)}


# --- Caffe's wire format: tests/protowriter.py, a writer separate from the reader under test ---
def blob(t: torch.Tensor, legacy: bool) -> bytes:
    data = field(5, t.detach().numpy().astype("<f4").tobytes())
    if legacy:  # num/channels/height/width, fc weights as 1 x 1 x out x in
        dims = [1] * (4 - t.ndim) + list(t.shape)
        return b"".join(varint(n << 3) + varint(d) for n, d in zip((1, 2, 3, 4), dims)) + data
    return field(7, field(1, b"".join(varint(d) for d in t.shape))) + data


def caffemodel(model: torch.nn.Module, legacy: bool = False, drop: str = "", **replace: torch.Tensor) -> bytes:
    """A NetParameter with one layer per BVLC name (``layer`` field 100, or legacy V1 ``layers`` field 2)."""
    state = {**model.state_dict(), **{k.replace("__", "."): v for k, v in replace.items()}}
    out = field(1, b"GoogleNet")
    for name, ours in layer_map(aux=True).items():
        if name == drop:
            continue
        kind = "InnerProduct" if "loss" in name and not name.endswith("/conv") else "Convolution"
        blobs = [blob(state[f"{ours}.weight"], legacy), blob(state[f"{ours}.bias"], legacy)]
        if legacy:  # V1LayerParameter: 4 name, 5 type enum (CONVOLUTION 4, INNER_PRODUCT 14), 6 blobs
            body = field(4, name.encode()) + varint(5 << 3) + varint(4 if kind == "Convolution" else 14)
            out += field(2, body + b"".join(field(6, b) for b in blobs))
        else:  # LayerParameter: 1 name, 2 type, 7 blobs
            out += field(100, field(1, name.encode()) + field(2, kind.encode()) + b"".join(field(7, b) for b in blobs))
    return out


def deploy_prototxt(size: int, num_classes: int, heads: bool = True) -> str:
    """BVLC's deploy.prototxt for GoogLeNet (the layer list of models/bvlc_googlenet), aux heads included; the
    trunk alone (up to inception_5b/output) with ``heads=False``, for input sizes the fixed-size heads do not take."""
    lines = [f'name: "GoogleNet"\ninput: "data"\ninput_shape {{ dim: 1 dim: 3 dim: {size} dim: {size} }}']

    def conv(name, bottom, n, k, stride=1, pad=0):
        lines.append(f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
                     f'convolution_param {{ num_output: {n} kernel_size: {k} stride: {stride} pad: {pad} }} }}\n'
                     f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}')
        return name

    def pool(name, bottom, kind, k, stride, pad=0):
        lines.append(f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" pooling_param '
                     f'{{ pool: {kind} kernel_size: {k} stride: {stride} pad: {pad} }} }}')
        return name

    def lrn(name, bottom):
        lines.append(f'layer {{ name: "{name}" type: "LRN" bottom: "{bottom}" top: "{name}" '
                     f'lrn_param {{ local_size: 5 alpha: 0.0001 beta: 0.75 }} }}')
        return name

    def fc(name, bottom, n, relu):
        lines.append(f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}" '
                     f'inner_product_param {{ num_output: {n} }} }}')
        if relu:
            lines.append(f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}')
        return name

    x = conv("conv1/7x7_s2", "data", 64, 7, 2, 3)
    x = lrn("pool1/norm1", pool("pool1/3x3_s2", x, "MAX", 3, 2))
    x = conv("conv2/3x3", conv("conv2/3x3_reduce", x, 64, 1), 192, 3, 1, 1)
    x = pool("pool2/3x3_s2", lrn("conv2/norm2", x), "MAX", 3, 2)
    for i, (c1, r3, c3, r5, c5, pp) in INCEPTIONS.items():
        p = f"inception_{i}"
        tops = [conv(f"{p}/1x1", x, c1, 1), conv(f"{p}/3x3", conv(f"{p}/3x3_reduce", x, r3, 1), c3, 3, 1, 1),
                conv(f"{p}/5x5", conv(f"{p}/5x5_reduce", x, r5, 1), c5, 5, 1, 2),
                conv(f"{p}/pool_proj", pool(f"{p}/pool", x, "MAX", 3, 1, 1), pp, 1)]
        lines.append(f'layer {{ name: "{p}/output" type: "Concat" '
                     + " ".join(f'bottom: "{t}"' for t in tops) + f' top: "{p}/output" }}')
        x = f"{p}/output"
        if i in ("4a", "4d") and heads:  # aux heads
            n = 1 if i == "4a" else 2
            a = conv(f"loss{n}/conv", pool(f"loss{n}/ave_pool", x, "AVE", 5, 3), 128, 1)
            fc(f"loss{n}/classifier", fc(f"loss{n}/fc", a, 1024, True), num_classes, False)
        if i in ("3b", "4e"):
            x = pool(f"pool{3 if i == '3b' else 4}/3x3_s2", x, "MAX", 3, 2)
    if heads:
        fc("loss3/classifier", pool("pool5/7x7_s1", x, "AVE", 7, 1), num_classes, False)
    return "\n".join(lines) + "\n"


def random_googlenet(seed: int = 0, sensitive: bool = False) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("googlenet", num_classes=1000, aux_logits=True).eval()
    with torch.no_grad():  # biases around 0.2 everywhere (Caffe's init): not zero, so a dropped bias shows
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.bias.uniform_(-0.2, 0.4)
        if sensitive:
            # A random deep net's pooled features share one large pattern, so every image gets the same top class.
            # Centring the classifier on the features of grey images (bias = -W f_mean) and sharpening it makes the
            # top class follow the picture, so a wrong channel order changes labels.
            grey = torch.randint(0, 256, (4, 3, 1, 1), dtype=torch.uint8).expand(4, 3, 224, 224)
            mean = model.forward_features(model_input(grey, PREPROCESSING)).logits.mean(0)
            model.fc.weight.mul_(20)
            model.fc.bias.copy_(-model.fc.weight @ mean)
    return model


def rel(a, b) -> float:
    a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
    return float((a - b).abs().max() / b.abs().max())


torch.set_num_threads(1)
d = Path(tempfile.mkdtemp())
m = random_googlenet(); (d / "b.caffemodel").write_bytes(caffemodel(m))
t = time.perf_counter(); main(["convert", "--from", "caffe", str(d / "b.caffemodel"), str(d / "b.safetensors")]); print("convert caffe s", round(time.perf_counter() - t, 2), "size MB", round((d / "b.caffemodel").stat().st_size / 1e6, 1))
ours = load_model(d / "b.safetensors")
for size in (224, 160, 257):
    (d / "p.prototxt").write_text(deploy_prototxt(size, 1000, heads=size == 224))
    net = cv2.dnn.readNetFromCaffe(str(d / "p.prototxt"), str(d / "b.caffemodel"))
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size)) * 255 - 117
    net.setInput(x.numpy())
    cap = {}
    h = ours.inception5b.register_forward_hook(lambda mod, i, o: cap.update(o=o))
    with torch.no_grad(): out = ours(x, with_aux=True)
    h.remove()
    if size == 224:
        lo, a1, a2, tr = net.forward(["loss3/classifier", "loss1/classifier", "loss2/classifier", "inception_5b/output"])
        print(size, "logits rel", f"{rel(out.logits, lo.reshape(1, -1)):.2e}", "aux1", f"{rel(out.aux1, a1.reshape(1, -1)):.2e}", "aux2", f"{rel(out.aux2, a2.reshape(1, -1)):.2e}", "trunk", f"{rel(cap['o'], tr):.2e}")
    else:
        tr = net.forward("inception_5b/output")
        print(size, "trunk rel", f"{rel(cap['o'], tr):.2e}", tuple(tr.shape))
theirs = randomise_(lucent_inceptionv1()(redirected_ReLU=False), 0)
torch.save(theirs.state_dict(), d / "i.pth")
main(["convert", "--from", "inception5h", str(d / "i.pth"), str(d / "i.safetensors")])
i5 = load_model(d / "i.safetensors")
x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)) * 255 - 117
cap = {}
theirs.softmax2_pre_activation_matmul.register_forward_hook(lambda mod, i, o: cap.update(o=o))
with torch.no_grad(): theirs(x); got = i5(x)
print("inception5h vs lucent (true LRN) logits rel", f"{rel(got, cap['o']):.2e}")
