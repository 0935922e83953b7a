"""``googlenet bench train``: one optimisation step (forward with aux heads, loss, backward, SGD step).

Reference: torchvision's googlenet in a plain eager fp32 NCHW loop with its two aux losses (weight 0.3, as the
paper), ``torch.optim.SGD`` with its default per-parameter loop. Project: ``googlenet.train.step.TrainStep`` in
its fastest configuration here (bf16 autocast, channels_last, fused SGD; compile when asked), plus fp32
channels_last to show what the layout alone buys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import Contender, add_compute, forward_macs, matmul_peaks, measure

REFERENCE = "torchvision eager fp32 NCHW, SGD (aux losses)"


def sgd(model: nn.Module, **fast) -> torch.optim.Optimizer:
    # The paper's optimiser: SGD, momentum 0.9 (lr only matters for stability over a few benchmark steps).
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4, **fast)


def torchvision_step(model: nn.Module, optimizer: torch.optim.Optimizer, images, labels) -> None:
    out = model(images)  # train mode with aux_logits: GoogLeNetOutputs(logits, aux_logits2, aux_logits1)
    loss = F.cross_entropy(out.logits, labels) + 0.3 * (F.cross_entropy(out.aux_logits1, labels)
                                                         + F.cross_entropy(out.aux_logits2, labels))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def bench_train(*, arch: str = "googlenet_tv", batch_size: int = 32, input_size: int = 224,
                precisions=("fp32", "bf16"), rounds: int = 5, compile: bool = False,
                progress=None) -> tuple[list[dict], list[str]]:
    import torchvision

    from ..models import create_model
    from ..train.step import TrainStep

    g = torch.Generator().manual_seed(0)
    images = F.interpolate(torch.randn(batch_size, 3, 7, 7, generator=g), size=input_size, mode="bilinear")
    labels = torch.randint(0, 1000, (batch_size,), generator=g)

    tv = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True).train()
    tv_opt = sgd(tv, foreach=False)
    contenders = [Contender(REFERENCE, "reference", "fp32", batch_size,
                            lambda: torchvision_step(tv, tv_opt, images, labels))]
    configs = [(p, False) for p in ("fp32", "bf16") if p in precisions]
    if compile:
        configs += [(p, True) for p in ("fp32", "bf16") if p in precisions]
    for precision, compiled in configs:
        model = create_model(arch, num_classes=1000).train()
        # fused: one kernel updates all ~200 tensors (weights, momentum) instead of a Python loop over them.
        step = TrainStep(model, sgd(model, fused=True), precision=precision, channels_last=True, compile=compiled)
        name = f"{arch} TrainStep {precision} channels_last fused-SGD" + (" compile" if compiled else "")
        contenders.append(Contender(name, "project", precision, batch_size,
                                    (lambda s=step: s(images, labels)), extra={"arch": arch}))
    rows = measure(contenders, rounds, REFERENCE, progress=progress)
    peaks = matmul_peaks(progress)
    tv_macs = forward_macs(tv, input_size, train_mode=True)  # torchvision runs its aux heads in train mode
    our_macs = forward_macs(create_model(arch, num_classes=1000), input_size, with_aux=True)
    # A training step is about 3x the forward pass (forward, grad of activations, grad of weights): 6 FLOPs/MAC.
    add_compute(rows, tv_macs, our_macs, 6.0, peaks)
    return rows, [f"random weights and labels, 1000 classes, input {input_size}x{input_size}; project arch {arch}",
                  f"matmul 2048^3 peak in this run: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} "
                  f"GFLOP/s; GFLOP/s = 6 x multiply-adds (aux heads included: {our_macs / 1e6:.0f}M project, "
                  f"{tv_macs / 1e6:.0f}M torchvision) x images/s",
                  "goal: every arch at >= 70% of the peak of its precision"]

