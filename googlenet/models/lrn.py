"""Local response normalisation across channels (Caffe's LRN), fast and exact, exported to ONNX as the native op.

    y_c = x_c / (k + alpha / size * S_c) ** beta,   S_c = sum of x_j ** 2 over the window j in [c - size//2, c + (size-1)//2]

the formula and window of ``torch.nn.functional.local_response_norm`` (and of Caffe, and of ONNX's ``LRN`` for odd
sizes). Why not call PyTorch's: it builds a 5-D tensor and runs ``avg_pool3d`` across channels, which took 56% of
the paper net's training step at 224 on a CPU and has no bf16 kernel.

Here the window sum is ``size - 1`` shifted adds of channel slices (``window_sum``), which keep any memory layout
(channels_last included) and cost a few cheap passes over the tensor. The backward pass is written out (one more
window sum, with the window mirrored) instead of letting autograd differentiate the chain of ops, which saves
tensors and passes. With B the 0/1 window matrix (S = B @ x**2 per pixel):

    dL/dx = g * d**-beta - 2 * beta * alpha / size * x * (B^T @ (g * d**-beta * x / d)),   d = k + alpha / size * S

Everything is computed in fp32 whatever the input dtype (bf16 autocast included): the sum of squares can overflow
fp16 and loses digits in bf16. The result comes back in the input's dtype.
"""

from __future__ import annotations

import contextlib
import threading

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def window_sum(t: Tensor, before: int, after: int) -> Tensor:
    """out[:, c] = sum of t[:, j] for j in [c - before, c + after] (clipped to the channels), in ``t``'s layout.

    Shifted in-place adds of channel slices: ``before + after`` cheap passes over the tensor. Measured against the
    alternatives for 8192 pixels x 192 channels on one core: this 2.5 ms, a banded matmul 13.7 ms, avg_pool1d over
    the channel axis 18.6 ms, a float64 cumulative sum 9.8 ms (a float32 one loses digits to cancellation).
    """
    out = t.clone()
    channels = t.shape[1]
    for d in range(1, min(before, channels - 1) + 1):
        out[:, d:] += t[:, :channels - d]
    for d in range(1, min(after, channels - 1) + 1):
        out[:, :channels - d] += t[:, d:]
    return out


def _pow_neg(d: Tensor, beta: float) -> Tensor:
    """d ** -beta. Caffe's beta 0.75 and inception5h's 0.5 through square roots, which run several times faster than
    the general pow (exp/log) on a CPU and agree with it within fp32 rounding."""
    if beta == 0.75:
        return (d * d.sqrt()).rsqrt_()
    if beta == 0.5:
        return d.rsqrt()
    return d.pow(-beta)


class _LRNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
        scale = alpha / size
        before, after = size // 2, (size - 1) // 2  # PyTorch's (and Caffe's) window, even sizes included
        d = window_sum(x * x, before, after).mul_(scale).add_(k)  # k + alpha/size * S
        inv = _pow_neg(d, beta)  # d ** -beta
        y = x * inv
        ctx.save_for_backward(x, inv, d)
        ctx.lrn = (beta, scale, before, after)
        return y

    @staticmethod
    def backward(ctx, g: Tensor):
        x, inv, d = ctx.saved_tensors
        beta, scale, before, after = ctx.lrn
        gi = g * inv
        # The transposed window: channel j feeds every c whose window holds j, i.e. j - after .. j + before.
        t = window_sum(gi * x / d, after, before)
        grad = gi - (2 * beta * scale) * x * t
        return grad, None, None, None, None

    @staticmethod
    def symbolic(g, x, size: int, alpha: float, beta: float, k: float):
        # ONNX's LRN has the same formula (alpha divided by size) and, for odd sizes, the same window; ONNX Runtime
        # runs it as one kernel and its int8 quantiser keeps it in fp32 between QuantizeLinear/DequantizeLinear.
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


_onnx = threading.local()


@contextlib.contextmanager
def onnx_lrn(native: bool):
    """Inside: ONNX export writes LRN as the native ``LRN`` op (native=True, the default) or as PyTorch's
    decomposition into elementwise ops and a 3-D average pool (native=False). Why both: one ``LRN`` node is what
    TensorRT, OpenVINO and readers of the graph expect, but ONNX Runtime's CPU ``LRN`` kernel is slow (38% of
    the paper net's run time at 224; 18.5 img/s native vs 23.3 decomposed, BENCHMARKS.md), so the in-process ONNX
    Runtime sessions export the decomposition."""
    previous = getattr(_onnx, "native", True)
    _onnx.native = native
    try:
        yield
    finally:
        _onnx.native = previous


@torch.jit.unused
def _lrn_eager(x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    if torch.onnx.is_in_onnx_export() and (size % 2 == 0 or not getattr(_onnx, "native", True)):
        # ONNX's window for even sizes leans the other way ((size-1)//2 before): export PyTorch's decomposition.
        return F.local_response_norm(x.float(), size, alpha, beta, k).to(x.dtype)
    wide = x if x.dtype in (torch.float32, torch.float64) else x.float()  # fp16/bf16 in, fp32 inside
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _LRNFunction.apply(wide, size, alpha, beta, k).to(x.dtype)


def local_response_norm(x: Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> Tensor:
    """Equal to ``F.local_response_norm(x, size, alpha, beta, k)`` (within fp32 rounding) for N x C x H x W ``x``."""
    if torch.jit.is_scripting() or x.dim() != 4:
        # TorchScript cannot call an autograd.Function; other ranks are not a conv net's activations.
        return F.local_response_norm(x.float(), size, alpha, beta, k).to(x.dtype)
    return _lrn_eager(x, size, alpha, beta, k)


class LocalResponseNorm(nn.LocalResponseNorm):
    """``nn.LocalResponseNorm`` (same arguments, same state) with the fast exact implementation above."""

    def forward(self, x: Tensor) -> Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)
