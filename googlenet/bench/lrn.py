"""``googlenet bench lrn``: the fast LRN beside ``F.local_response_norm`` at the paper network's two LRN sites.

Site 1 follows pool1 (64 channels at input/4), site 2 follows conv2's 3x3 (192 channels at input/4). Each contender
is one forward and backward pass of both sites on a channels_last batch (the training layout), fp32, with the
Caffe parameters (5, 1e-4, 0.75, 1). The backward pass gets a dense upstream gradient, as in the network (conv2's
and pool2's backward give one), not the one broadcast scalar that ``.sum().backward()`` would.

With ``--compile``, ``bench_lrn_net`` also times the whole paper net in channels_last fp32, eager against
torch.compile (Inductor), inference and a training step, with the C kernel's op inside the compiled graph against
the PyTorch LRN inside it (``LocalResponseNorm.native = False``), which Inductor can fuse with its neighbours.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from ..models.lrn import local_response_norm
from .common import Contender, add_ratios, measure

REFERENCE = "F.local_response_norm (PyTorch)"


def bench_lrn(*, batch_size: int = 32, input_size: int = 224, rounds: int = 5,
              progress=None) -> tuple[list[dict], list[str]]:
    side = -(-(-(-input_size // 2) // 2))  # conv1 stride 2 then ceil-mode pool stride 2: 224 -> 56, 64 -> 16
    g = torch.Generator().manual_seed(0)
    sites = [torch.randn(batch_size, c, side, side, generator=g).relu().contiguous(memory_format=torch.channels_last)
             for c in (64, 192)]
    upstream = [torch.randn(x.shape, generator=g).contiguous(memory_format=torch.channels_last) for x in sites]

    def step(fn):
        def run():
            for x, grad in zip(sites, upstream):
                x = x.detach().requires_grad_()
                fn(x, 5, 1e-4, 0.75, 1.0).backward(grad)
        return run

    contenders = [Contender(REFERENCE, "reference", "fp32", batch_size, step(F.local_response_norm)),
                  Contender("googlenet.models.lrn (fast LRN)", "project", "fp32", batch_size,
                            step(local_response_norm)),
                  Contender("googlenet.models.lrn, PyTorch ops only (no C compiler)", "project", "fp32", batch_size,
                            step(partial(local_response_norm, native=False)))]
    rows = measure(contenders, rounds, REFERENCE, progress=progress)
    return rows, [f"forward + backward of both LRN sites of the paper's googlenet at input {input_size}x{input_size}"
                  f": {batch_size} x 64 x {side} x {side} and {batch_size} x 192 x {side} x {side}, channels_last fp32",
                  "goal: fast LRN >= 10x F.local_response_norm"]


def bench_lrn_net(*, batch_size: int = 32, input_size: int = 224, rounds: int = 5,
                  progress=None) -> tuple[list[dict], list[str]]:
    from ..models import create_model
    from ..models.googlenet import LocalResponseNorm
    from ..train.step import TrainStep
    from .train import sgd

    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, input_size, input_size, generator=g).contiguous(
        memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (batch_size,), generator=g)

    def net(native: bool, training: bool):
        model = create_model("googlenet", num_classes=1000).train(training).to(memory_format=torch.channels_last)
        for m in model.modules():
            if isinstance(m, LocalResponseNorm):
                m.native = native  # an attribute, not the switch: compiled code is guarded on it
        return model

    contenders = []
    for native in (True, False):
        for compiled in (False, True):
            suffix = (", C LRN, " if native else ", PyTorch LRN, ") + ("compiled" if compiled else "eager")
            model = net(native, False)
            infer = torch.inference_mode()(torch.compile(model, fullgraph=True) if compiled else model)
            trained = net(native, True)
            step = TrainStep(trained, sgd(trained, fused=True), channels_last=True, compile=compiled)
            for mode, run in (("inference", partial(infer, images)), ("train step", partial(step, images, labels))):
                contenders.append(Contender(f"googlenet {mode}{suffix}", "project", "fp32", batch_size, run,
                                            extra={"mode": mode}))
    rows = measure(contenders, rounds, progress=progress)
    for mode in ("inference", "train step"):
        add_ratios([r for r in rows if r["mode"] == mode], f"googlenet {mode}, C LRN, eager")
    return rows, [f"the paper's googlenet, channels_last fp32, {batch_size} x 3 x {input_size} x {input_size}; "
                  "ratios against the eager net with the C kernel, per mode; compile time (minutes) not counted"]
