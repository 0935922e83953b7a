"""The fused C LRN kernel (lrn_kernel.c): built once per machine with the system C compiler, loaded with ctypes
(``googlenet.native``: why C and ctypes, where the library is cached, ``$CC``).

It runs on ``torch.get_num_threads()`` OpenMP threads, sharing torch's OpenMP runtime. Without a compiler, or with
``GOOGLENET_NATIVE_LRN=0``, ``kernel()`` returns None and lrn.py uses its PyTorch kernel.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Optional

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


def kernel() -> Optional[ctypes.CDLL]:
    """The loaded library, built on first use; None where it cannot be (no compiler, or switched off)."""
    return _library.get()


def supports(x: Tensor) -> bool:
    """Whether the C kernel takes this input: 4-D fp32 on the CPU in channels_last (the layout training uses),
    with at least one channel."""
    return (x.dim() == 4 and x.device.type == "cpu" and x.dtype == torch.float32 and x.shape[1] > 0
            and x.is_contiguous(memory_format=torch.channels_last) and kernel() is not None)


def _check(status: int) -> None:
    if status != 0:
        raise MemoryError("LRN kernel: out of memory for its per-thread scratch")  # the only failure it reports


def forward(x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    """LRN of x (supports(x) must hold), channels_last like x."""
    y = torch.empty_like(x)
    n, c, h, w = x.shape
    _check(kernel().lrn_forward(x.data_ptr(), y.data_ptr(), n * h * w, c, size, alpha, beta, k,
                                torch.get_num_threads()))
    return y


def backward(grad: Tensor, x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    """dL/dx from dL/dy = grad, recomputing the denominator from x (cheaper here than keeping it)."""
    g = grad.to(torch.float32).contiguous(memory_format=torch.channels_last)
    dx = torch.empty_like(x)
    n, c, h, w = x.shape
    _check(kernel().lrn_backward(g.data_ptr(), x.data_ptr(), dx.data_ptr(), n * h * w, c, size, alpha, beta, k,
                                 torch.get_num_threads()))
    return dx
