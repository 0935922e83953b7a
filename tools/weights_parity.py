"""Figures of docs/weights.md: converted weights against independent engines (OpenCV Caffe importer, lucent),
random weights. Needs the test extras and torch-lucent. Run: PYTHONPATH=. python tools/weights_parity.py"""
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.*

from tests.test_caffe import random_googlenet, caffemodel, deploy_prototxt, rel
from tests.test_inception5h import lucent_inceptionv1, randomise_
from googlenet.cli import main
from googlenet.weights import load_model
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
