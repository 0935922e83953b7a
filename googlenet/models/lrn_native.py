"""The fused C LRN kernel (lrn_kernel.c): built once per machine with the system C compiler, loaded with ctypes
(``googlenet.native``: why C and ctypes, where the library is cached, ``$CC``).

It runs on ``torch.get_num_threads()`` OpenMP threads, sharing torch's OpenMP runtime. Without a compiler, or with
``GOOGLENET_NATIVE_LRN=0``, ``kernel()`` returns None and lrn.py uses its PyTorch kernel.

Forward and backward are custom ops (``googlenet::lrn``, ``googlenet::lrn_backward``) with fake kernels and the
gradient registered, so torch.export and torch.compile(fullgraph=True) keep the kernel in the graph as one opaque
node: they cannot trace a ctypes call (no data pointers on fake tensors) nor the library's lock.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from torch import Tensor

from .. import native

SOURCE = Path(__file__).with_name("lrn_kernel.c")


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    f, i64, i32, p = ctypes.c_float, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    lib.lrn_forward.argtypes = [p, p, i64, i64, i32, f, f, f, i32]
    lib.lrn_backward.argtypes = [p, p, p, i64, i64, i32, f, f, f, i32]
    lib.lrn_forward.restype = lib.lrn_backward.restype = ctypes.c_int
    return lib


_library = native.Library(SOURCE, _declare, "GOOGLENET_NATIVE_LRN")
kernel = _library.get  # the loaded library, built on first use; None where it cannot be (no compiler, or off)


def supports(x: Tensor) -> bool:
    """Whether the C kernel takes ``x``: 4-D fp32 on the CPU in channels_last, with at least one channel."""
    return (x.dim() == 4 and x.device.type == "cpu" and x.dtype == torch.float32 and x.shape[1] > 0
            and x.is_contiguous(memory_format=torch.channels_last) and _library.available())


def _check(status: int) -> None:
    if status != 0:
        raise MemoryError("LRN kernel: out of memory for its per-thread scratch")  # the only failure it reports


# Outputs are channels_last whatever the input's strides (a compiler may hand an op other strides than eager's):
# the fake kernels say so too.
_NHWC = torch.channels_last


@torch.library.custom_op("googlenet::lrn", mutates_args=(), device_types="cpu")
def forward(x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    """LRN of x (4-D fp32), channels_last."""
    x = x.contiguous(memory_format=_NHWC)
    y = torch.empty_like(x, memory_format=_NHWC)
    n, c, h, w = x.shape
    _check(_library.loaded().lrn_forward(x.data_ptr(), y.data_ptr(), n * h * w, c, size, alpha, beta, k,
                                         torch.get_num_threads()))
    return y


@torch.library.custom_op("googlenet::lrn_backward", mutates_args=(), device_types="cpu")
def backward(grad: Tensor, x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    """dL/dx from dL/dy = grad, recomputing the denominator from x (cheaper here than keeping it)."""
    g, x = grad.to(torch.float32).contiguous(memory_format=_NHWC), x.contiguous(memory_format=_NHWC)
    dx = torch.empty_like(x, memory_format=_NHWC)
    n, c, h, w = x.shape
    _check(_library.loaded().lrn_backward(g.data_ptr(), x.data_ptr(), dx.data_ptr(), n * h * w, c, size, alpha,
                                          beta, k, torch.get_num_threads()))
    return dx


@forward.register_fake
def _(x, size, alpha, beta, k):
    return torch.empty_like(x, memory_format=_NHWC)


@backward.register_fake
def _(grad, x, size, alpha, beta, k):
    return torch.empty_like(x, memory_format=_NHWC)


def _save(ctx, inputs, output) -> None:
    x, *ctx.constants = inputs
    ctx.save_for_backward(x)


def _gradient(ctx, grad: Tensor):
    # lrn_backward has no gradient of its own: double backward is refused, as for lrn.py's PyTorch kernel
    return backward(grad, ctx.saved_tensors[0], *ctx.constants), None, None, None, None


forward.register_autograd(_gradient, setup_context=_save)
