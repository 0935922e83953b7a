"""The paper net's two LRN sites alone on ONNX Runtime, as the net exports them (issue 14; BENCHMARKS.md).

    PYTHONPATH=. python tools/onnx_lrn_sites.py [--batch 8 32] [--threads 2]

A module with ``local_response_norm`` at the sites' shapes (64 x 56 x 56 after pool1, 192 x 56 x 56 after conv2 at
224), exported decomposed (what the in-process sessions run) and as ONNX's ``LRN`` op (ONNX Runtime's own kernel);
the best of 5 runs of each. Tells how much of the paper net's ONNX Runtime time a faster LRN could take away.
"""

from __future__ import annotations

import argparse
import io
import time
import warnings

import torch

from googlenet.models.lrn import local_response_norm, onnx_lrn


class Sites(torch.nn.Module):
    def forward(self, a, b):
        return local_response_norm(a, 5, 1e-4, 0.75, 1.0), local_response_norm(b, 5, 1e-4, 0.75, 1.0)


def main() -> None:
    import onnxruntime as ort

    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    for batch in a.batch:
        x1, x2 = torch.randn(batch, 64, 56, 56), torch.randn(batch, 192, 56, 56)
        for native in (False, True):
            f = io.BytesIO()
            with onnx_lrn(native), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(Sites(), (x1, x2), f, dynamo=False, opset_version=17)
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = a.threads, 1
            session = ort.InferenceSession(f.getvalue(), so, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: x1.numpy(), session.get_inputs()[1].name: x2.numpy()}
            session.run(None, feed)
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                session.run(None, feed)
                best = min(best, time.perf_counter() - start)
            kind = "ONNX LRN op" if native else "decomposed"
            print(f"batch {batch}, {kind}: {1e3 * best:.1f} ms ({1e3 * best / batch:.2f} ms an image)")


if __name__ == "__main__":
    main()
