"""Local response normalisation across channels (Caffe's LRN, AlexNet section 3.3), fast and exact.

    y_c = x_c / (k + alpha / n * sum_{c' in window(c)} x_c'^2) ** beta,   window(c) = [c - n//2, c + n//2]

``F.local_response_norm`` computes the window sum by padding a 5-D view and running ``avg_pool3d`` across
channels, and lets autograd differentiate every step: on the CPU that is the slowest layer of the paper's network
(56% of a training step at 224x224) and has no bf16 kernel. Here:

* on the CPU, 4-D channels_last input (inference's layout; training's with --channels-last) goes through a fused
  C kernel (lrn_kernel.c, built on first use by lrn_native.py): one pass over the tensor forward, one backward;
  it is the custom op ``googlenet::lrn``, so torch.export and torch.compile(fullgraph=True) keep it in their graph;
* elsewhere (NCHW, other devices, no C compiler), the PyTorch ops below:
  * the window sum is one copy and n - 1 in-place slice adds along the channels (contiguous rows in channels_last);
  * the backward pass is written out (one more window sum instead of autograd's chain through pad, pool and
    pow): dL/dx = g * d^-beta - (2 alpha beta / n) * x * window_sum(g * y / d),
    with d = k + alpha / n * window_sum(x^2);
* bf16 and fp16 inputs are computed in fp32 (the sum of squares can overflow fp16) and returned in their dtype;
* ONNX export emits the native ``LRN`` operator (same formula, odd sizes), so ONNX Runtime runs its own kernel.

Hand-written because PyTorch has no fused LRN kernel; parity with ``F.local_response_norm`` (forward and gradient,
both parameter sets the archs use) is tested in tests/test_lrn.py.
"""

from __future__ import annotations

import contextlib
import operator
import threading

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import lrn_native

MAX_SIZE = 1023  # the window (in channels); 5 in Caffe, 11 in inception5h


def window_sum(sq: Tensor, size: int, scale: float = 1.0, shift: float = 0.0) -> Tensor:
    """shift + scale * (sum over channels c - size//2 .. c + size//2, zero outside, of ``sq``), shape kept.

    The slice adds, measured against a banded C x C 1x1 convolution (one GEMM) at batch 32 on this 2-core CPU, fp32:
    192 x 16 x 16 (the main job's second LRN) 0.60 against 3.14 ms, 192 x 28 x 28 2.06 against 10.58, 64 x 56 x 56
    4.02 against 4.48, 192 x 56 x 56 37.9 against 58.2: the GEMM does C / size times the arithmetic, and loses even
    where both are memory-bound.
    """
    dim, permuted = 1, sq.dim() == 4 and sq.is_contiguous(memory_format=torch.channels_last)
    if permuted:
        sq, dim = sq.permute(0, 2, 3, 1), 3
    n = sq.shape[dim]
    # shift + scale * centre in one pass; the output keeps sq's strides (contiguous NHWC when permuted)
    out = torch.add(torch.tensor(shift, dtype=sq.dtype, device=sq.device), sq, alpha=scale)
    for k in range(1, min(size // 2, n - 1) + 1):
        out.narrow(dim, k, n - k).add_(sq.narrow(dim, 0, n - k), alpha=scale)
        out.narrow(dim, 0, n - k).add_(sq.narrow(dim, k, n - k), alpha=scale)
    return out.permute(0, 3, 1, 2) if permuted else out


def _neg_pow(d: Tensor, beta: float) -> Tensor:
    """d ** -beta; for Caffe's beta 0.75 as rsqrt(d) * sqrt(rsqrt(d)), half the time of pow's exp-log path and within
    3e-7 relative of it."""
    if beta == 0.75:
        r = d.rsqrt()
        return r * r.sqrt()  # not in place: torch.export traces through LRNFunction, and rsqrt's backward needs r
    if beta == 0.5:
        return d.rsqrt()
    return d.pow(-beta)


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.bfloat16, torch.float16) else x.dtype


class LRNFunction(torch.autograd.Function):
    """The kernel written in PyTorch ops; the C kernel is lrn_native's custom op."""

    @staticmethod
    def forward(ctx, x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
        xc = x.to(_compute_dtype(x))
        ctx.constants = (size, alpha, beta, k)
        denom = window_sum(xc * xc, size, alpha / size, k)  # d = k + alpha/n * window_sum(x^2)
        scale = _neg_pow(denom, beta)  # d^-beta
        y = xc * scale
        ctx.save_for_backward(xc, y, scale, denom)
        return y.to(x.dtype)

    @staticmethod
    @once_differentiable  # the written-out backward is not itself differentiable: say so rather than be wrong
    def backward(ctx, grad: Tensor):
        size, alpha, beta, k = ctx.constants
        # dL/dx = g * d^-beta - (2 alpha beta / n) * x * window_sum(g * y / d): five passes over the tensor.
        xc, y, scale, denom = ctx.saved_tensors
        g = grad.to(xc.dtype)
        spread = window_sum((g * y).div_(denom), size)
        gx = (g * scale).addcmul_(xc, spread, value=-2.0 * alpha * beta / size)
        return gx.to(grad.dtype), None, None, None, None

    @staticmethod
    def symbolic(g, x, size: int, alpha: float, beta: float, k: float):
        # ONNX LRN: square_sum over [c - floor((size-1)/2), c + ceil((size-1)/2)], x / (bias + alpha/size * sum)^beta.
        return g.op("LRN", x, alpha_f=alpha, beta_f=beta, bias_f=k, size_i=size)


_onnx = threading.local()


@contextlib.contextmanager
def onnx_lrn(native: bool):
    """Inside: ONNX export writes LRN as the native ``LRN`` op (native=True, the default) or as PyTorch's
    decomposition into elementwise ops and a 3-D average pool (native=False). Why both: one ``LRN`` node is what
    TensorRT, OpenVINO and readers of the graph expect, but ONNX Runtime's CPU ``LRN`` kernel is slow (38% of the
    paper net's run time at 224; 18.5 img/s native vs 23.3 decomposed, BENCHMARKS.md), so the in-process ONNX
    Runtime sessions (inference.build_ort_session) export the decomposition."""
    previous = getattr(_onnx, "native", True)
    _onnx.native = native
    try:
        yield
    finally:
        _onnx.native = previous


def local_response_norm(x: Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, *,
                        native: bool = True) -> Tensor:
    """Drop-in for ``F.local_response_norm`` on N x C x ... input (odd ``size``, as Caffe and ONNX define it).

    native: use the fused C kernel (lrn_native.py) where it applies: 4-D channels_last input on the CPU, with a C
    compiler on the machine. Otherwise, and with native=False, the kernel written in PyTorch ops below."""
    try:
        n = operator.index(size)  # an int, or an int-like such as numpy's: not 5.0
    except TypeError:
        n = 0
    if not (1 <= n <= MAX_SIZE and n % 2 == 1):
        raise ValueError(f"LRN size must be an odd integer from 1 to {MAX_SIZE} (Caffe and ONNX define the window "
                         f"for odd sizes), got {size!r}")
    size = n
    xc = x.to(_compute_dtype(x))
    if torch.onnx.is_in_onnx_export():  # LRNFunction's symbolic is the ONNX LRN op; the C kernel's op has none
        if not getattr(_onnx, "native", True):
            return _onnx_decomposition(xc, size, alpha, beta, k).to(x.dtype)
    elif native and lrn_native.supports(xc):  # the fused C kernel: one pass forward, one backward
        return lrn_native.forward(xc, size, alpha, beta, k).to(x.dtype)
    return LRNFunction.apply(x, size, alpha, beta, k)


def _onnx_decomposition(x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    """PyTorch's own decomposition (``F.local_response_norm``: the window mean as a 3-D average pool), with
    ``d ** -beta`` as Sqrt and Reciprocal nodes for Caffe's 0.75: ONNX Runtime's ``Pow`` was 9% of the paper net's
    run time at 224, and the two LRN sites take 19.1 instead of 27.4 ms a batch of 8 this way (BENCHMARKS.md).

    The channel padding is the pool's own (odd sizes pad equally on both sides; zeros counted, as F.pad's were), and
    the pool's extra axis is dropped by indexing, not ``squeeze(1)``: with a dynamic batch the exporter writes
    squeeze as an ``If`` node, whose output has no shape, and ONNX Runtime's NCHWc layout pass then skipped every
    pool downstream and reordered around each inception block: the paper net took 20.6 instead of 18.8 ms an
    image at batch 32 (BENCHMARKS.md)."""
    sq = (x * x).unsqueeze(1)
    pool = F.avg_pool3d if x.dim() == 4 else F.avg_pool2d if x.dim() == 3 else None
    if pool is None:  # other ranks: PyTorch's decomposition as it is
        return F.local_response_norm(x, size, alpha, beta, k)
    window, padding = (size,) + (1,) * (x.dim() - 2), (size // 2,) + (0,) * (x.dim() - 2)
    denom = pool(sq, window, stride=1, padding=padding, count_include_pad=True)[:, 0] * alpha + k
    return x * _neg_pow(denom, beta)
