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
from googlenet.models import create_model  # noqa: E402
from googlenet.pretrained.bvlc import layer_map  # noqa: E402
from googlenet.weights import load_model  # noqa: E402
from tests.bvlc_fixture import deploy  # noqa: E402
from tests.protowriter import field, varint  # noqa: E402
from tests.test_inception5h import lucent_inceptionv1, randomise_  # noqa: E402


# --- Caffe's wire format: tests/protowriter.py, a writer separate from the reader under test ---
def blob(t: torch.Tensor) -> bytes:
    shape = field(7, field(1, b"".join(varint(d) for d in t.shape)))
    return shape + field(5, t.detach().numpy().astype("<f4").tobytes())


def caffemodel(model: torch.nn.Module) -> bytes:
    """A NetParameter with one ``layer`` (field 100: 1 name, 2 type, 7 blobs) per BVLC name."""
    state = model.state_dict()
    out = field(1, b"GoogleNet")
    for name, ours in layer_map(aux=True).items():
        kind = "InnerProduct" if "loss" in name and not name.endswith("/conv") else "Convolution"
        blobs = b"".join(field(7, blob(state[f"{ours}.{p}"])) for p in ("weight", "bias"))
        out += field(100, field(1, name.encode()) + field(2, kind.encode()) + blobs)
    return out


def random_googlenet() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=1000, aux_logits=True).eval()
    with torch.no_grad():  # biases around 0.2 everywhere (Caffe's init): not zero, so a dropped bias shows
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.bias.uniform_(-0.2, 0.4)
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
    (d / "p.prototxt").write_text(deploy(size)[0])  # BVLC's deploy layer list; aux heads at 224 only
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
