"""Dropout that draws the mask of the whole global batch, so W processes drop what one process would.

Under DDP each rank runs its forward on its own rows of a global batch (rank r has rows r, r+W, ... :
train.data.shard). ``nn.Dropout`` draws a mask for the rows it is given, so two ranks of 4 rows draw other masks
than one process of 8 rows, whatever the seed. ``GlobalRowDropout`` draws the mask of all the global batch's rows
from a seed every rank shares (train.loop seeds the forward by the step's position) and keeps this rank's rows.

With one process it draws what ``nn.Dropout`` draws on the CPU, bit for bit: ATen's CPU dropout is
``empty_like(x).bernoulli_(1 - p)``, divided by ``1 - p``, times ``x`` (tests/test_train_global_batch.py holds the two
equal). Written by hand because torch has no dropout that takes a row spread. The model file is untouched: the
training loop swaps these in on its own copy (dropout has no state, so the weights files are the same).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn


class GlobalRowDropout(nn.Dropout):
    """``nn.Dropout`` whose mask, while ``rows`` is set, is the global batch's: ``rows = (global rows, rank,
    world)``; this rank's input holds global rows rank, rank + world, ... (fewer when files were skipped)."""

    rows: Optional[tuple[int, int, int]] = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0 or self.rows is None or self.inplace:
            return super().forward(x)
        total, rank, world = self.rows
        if len(range(rank, total, world)) < x.shape[0] or self.p == 1:
            return super().forward(x)  # a rank padded with a weight-0 image: none of the global rows is its own
        noise = torch.empty((total, *x.shape[1:]), dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        noise.div_(1 - self.p)
        return x * noise[rank::world][:x.shape[0]]


def install(model: nn.Module) -> list[GlobalRowDropout]:
    """Replaces every ``nn.Dropout`` in ``model`` by a ``GlobalRowDropout`` of the same p; returns them."""
    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                new = GlobalRowDropout(p=child.p, inplace=child.inplace)
                new.train(child.training)
                setattr(parent, name, new)
                swapped.append(new)
    return swapped


def spread(modules: list[GlobalRowDropout], rows: Optional[tuple[int, int, int]]) -> None:
    """The next forward's global batch: ``(global rows, rank, world)``, or None for a plain local draw."""
    for m in modules:
        m.rows = rows
