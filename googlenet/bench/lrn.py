"""``googlenet bench lrn``: the fast LRN beside PyTorch's ``F.local_response_norm``, forward + backward, at both LRN
sites of the paper's net (after pool1: 64 channels, after conv2: 192 channels, both at input/4), channels_last."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.lrn import local_response_norm
from .common import Contender, add_ratios, row, run_rounds

# (size, alpha, beta, k): Caffe's bvlc_googlenet and inception5h's in PyTorch's terms.
PARAMS = {"caffe": (5, 1e-4, 0.75, 1.0), "inception5h": (11, 11e-4, 0.5, 2.0)}


def _fwd_bwd(fn, x: torch.Tensor, grad: torch.Tensor, params) -> None:
    x.grad = None
    fn(x, *params).backward(grad)


def bench_lrn(*, batch_size: int = 32, input_size: int = 224, rounds: int = 5, progress=None):
    side = -(-input_size // 4)  # ceil: the stem's stride-2 conv and ceil-mode pool give 56 at 224, 16 at 64
    rows = []
    for label, params in PARAMS.items():
        contenders = []
        for channels in (64, 192):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(batch_size, channels, side, side, generator=g).relu().mul(10)
            x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
            grad = torch.randn(x.shape, generator=g).contiguous(memory_format=torch.channels_last)
            site = f"{label} LRN {channels}x{side}x{side}"
            for name, fn, role in ((f"{site} F.local_response_norm", F.local_response_norm, "reference"),
                                   (f"{site} fast", local_response_norm, "project")):
                contenders.append(Contender(name, role, "fp32", batch_size,
                                            (lambda f=fn, a=x, b=grad: _fwd_bwd(f, a, b, params))))
        run_rounds(contenders, rounds, progress=progress)
        block = [row(c) for c in contenders]
        for channels in (64, 192):
            site = f"{label} LRN {channels}x{side}x{side}"
            add_ratios([r for r in block if r["name"].startswith(site)], f"{site} F.local_response_norm")
        rows += block
    notes = [f"forward + backward per batch of {batch_size}, input {input_size}x{input_size}, fp32 channels_last; "
             "goal: fast >= 10x F.local_response_norm"]
    return rows, notes
