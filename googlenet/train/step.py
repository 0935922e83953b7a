"""One optimisation step, shared by ``googlenet train`` and ``googlenet bench train``.

Mixed precision, channels_last and torch.compile are switches on this one step, not copies of it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PRECISIONS = ("fp32", "bf16", "fp16")


def autocast(device: torch.device | str, precision: str):
    """The autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    device = torch.device(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 needs a CUDA device; use bf16 on the CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def to_device(images: Tensor, labels: Tensor, device: torch.device, channels_last: bool) -> tuple[Tensor, Tensor]:
    """A batch on ``device``, the images in the model's layout."""
    images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    return (images.contiguous(memory_format=torch.channels_last) if channels_last else images), labels


def googlenet_loss(out, labels: Tensor, aux_weight: float = 0.3, label_smoothing: float = 0.0) -> Tensor:
    """Paper section 5: the aux losses are added to the total loss with a discount weight of 0.3."""
    if isinstance(out, Tensor):  # the model ran without its aux heads
        return F.cross_entropy(out.float(), labels, label_smoothing=label_smoothing)
    loss = F.cross_entropy(out.logits.float(), labels, label_smoothing=label_smoothing)
    for aux in (out.aux1, out.aux2):
        if aux is not None and aux_weight:
            loss = loss + aux_weight * F.cross_entropy(aux.float(), labels, label_smoothing=label_smoothing)
    return loss


@dataclass
class StepResult:
    loss: Tensor  # detached scalar, fp32
    logits: Tensor  # detached main logits
    finite: bool  # False when the loss was NaN/inf: no update was applied


class TrainStep:
    """forward (with aux) -> loss -> backward -> optimizer step, under the chosen precision and layout."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, precision: str = "fp32",
                 channels_last: bool = False, compile: bool = False, aux_weight: float = 0.3,
                 label_smoothing: float = 0.0, device: torch.device | str = "cpu", grad_clip: Optional[float] = None,
                 all_finite: Optional[Callable[[bool], bool]] = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.device = torch.device(device)
        self.model, self.optimizer, self.precision, self.channels_last = model, optimizer, precision, channels_last
        self.aux_weight, self.label_smoothing, self.grad_clip = aux_weight, label_smoothing, grad_clip
        # Under DDP every rank must take the same branch (a rank that skips backward would leave the others waiting
        # in the gradient all-reduce): all_finite combines the local verdict across ranks.
        self.all_finite = all_finite
        # fp16 needs loss scaling; bf16 has fp32's range and does not.
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        if channels_last:
            model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(model) if compile else model

    def __call__(self, images: Tensor, labels: Tensor, *, loss_weight: float = 1.0) -> StepResult:
        """loss_weight scales the loss that is back-propagated (not the one returned): DDP averages gradients over
        ranks, so a rank holding n of a global batch of N images uses n * world / N to get the exact global mean."""
        images, labels = to_device(images, labels, self.device, self.channels_last)
        with autocast(self.device, self.precision):
            out = self.forward(images, with_aux=bool(self.aux_weight))  # aux_weight 0: the aux heads are not run
            loss = googlenet_loss(out, labels, self.aux_weight, self.label_smoothing)
        finite = bool(torch.isfinite(loss.detach()))
        if self.all_finite is not None:
            finite = self.all_finite(finite)
        self.optimizer.zero_grad(set_to_none=True)
        if finite:
            weighted = loss if loss_weight == 1.0 else loss * loss_weight
            (weighted if self.scaler is None else self.scaler.scale(weighted)).backward()
            if self.grad_clip:
                if self.scaler is not None:
                    self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        logits = out if isinstance(out, Tensor) else out.logits
        return StepResult(loss.detach().float(), logits.detach(), finite)
