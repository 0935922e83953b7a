"""How much of the paper net's ONNX Runtime time its two LRN sites take (issue 14; BENCHMARKS.md).

    PYTHONPATH=. python tools/onnx_lrn_sites.py [--batch 8 32] [--threads 2] [--whole-net]

Sites alone: a module with ``local_response_norm`` at the sites' shapes (64 x 56 x 56 after pool1, 192 x 56 x 56
after conv2 at 224), exported decomposed (what the in-process sessions run) and as ONNX's ``LRN`` op (ONNX Runtime's
own kernel); the best of 5 runs of each.

--whole-net: the whole net at 224 instead, as the in-process sessions export it, against the same net with its LRN
exported as the identity (what a free LRN would leave) and torchvision's export; the three alternated, the median
of 7 rounds. Inside the graph the LRN costs more than alone: its ops run outside ONNX Runtime's NCHWc layout, with
reorders around them.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import warnings
from unittest import mock

import torch

from googlenet.models import lrn
from googlenet.models.lrn import local_response_norm, onnx_lrn


class Sites(torch.nn.Module):
    def forward(self, a, b):
        return local_response_norm(a, 5, 1e-4, 0.75, 1.0), local_response_norm(b, 5, 1e-4, 0.75, 1.0)


def session(model: torch.nn.Module, inputs: tuple, native: bool, threads: int):
    import onnxruntime as ort

    f = io.BytesIO()
    with onnx_lrn(native), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, f, dynamo=False, opset_version=17)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    return ort.InferenceSession(f.getvalue(), so, providers=["CPUExecutionProvider"])


def sites(batch: int, threads: int) -> None:
    x1, x2 = torch.randn(batch, 64, 56, 56), torch.randn(batch, 192, 56, 56)
    for native in (False, True):
        s = session(Sites(), (x1, x2), native, threads)
        feed = {s.get_inputs()[0].name: x1.numpy(), s.get_inputs()[1].name: x2.numpy()}
        s.run(None, feed)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            s.run(None, feed)
            best = min(best, time.perf_counter() - start)
        kind = "ONNX LRN op" if native else "decomposed"
        print(f"batch {batch}, {kind}: {1e3 * best:.1f} ms ({1e3 * best / batch:.2f} ms an image)")


def whole_net(batch: int, threads: int) -> None:
    import torchvision

    from googlenet.models import create_model

    x = torch.randn(batch, 3, 224, 224)
    paper = create_model("googlenet", num_classes=1000).eval()
    tv = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval()
    runs = {"torchvision export": session(tv, (x,), False, threads),
            "paper net": session(paper, (x,), False, threads)}
    with mock.patch.object(lrn, "_onnx_decomposition", lambda z, *args: z.clone()):
        runs["paper net, LRN as identity"] = session(paper, (x,), False, threads)
    times = {k: [] for k in runs}
    for _ in range(8):  # the first round warms up
        for k, s in runs.items():
            start = time.perf_counter()
            s.run(None, {s.get_inputs()[0].name: x.numpy()})
            times[k].append(time.perf_counter() - start)
    ms = {k: 1e3 * statistics.median(v[1:]) / batch for k, v in times.items()}
    for k, v in ms.items():
        per_mac = ms["torchvision export"] / v * (1582 / 1498 if k != "torchvision export" else 1)
        print(f"batch {batch}, {k}: {v:.2f} ms an image ({per_mac:.3f}x the torchvision export per multiply-add)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--whole-net", action="store_true")
    a = p.parse_args()
    for batch in a.batch:
        (whole_net if a.whole_net else sites)(batch, a.threads)


if __name__ == "__main__":
    main()
