"""The data path's resize: a uint8 crop -> float pixels in [0, 1], ``C x size[0] x size[1]``, the numbers of
``transforms.resize(crop.float() / 255, size, mode).clamp(0, 1)`` to float rounding (within 2e-6 at the shrink
factors training meets; at large ones both sum many float terms in different orders, and this kernel is the one
closer to exact arithmetic) at 3-5x its speed on one core, through the C kernel resample_kernel.c (built on first
use by ``googlenet.native``).

The kernel knows no interpolation: it applies per-axis weights, and those come from F.interpolate itself (``taps``),
so every mode in ``transforms.INTERPOLATIONS`` keeps PyTorch's exact definition (antialiased bilinear and bicubic,
area as adaptive average pooling, nearest). Without a C compiler, with ``GOOGLENET_NATIVE_RESAMPLE=0``, or for an
input the kernel does not take (not on the CPU, a side over MAX_SIDE, a shrink factor over MAX_SHRINK, an unusual
memory layout), PyTorch's own path runs. One known difference: torch 2.14's antialiased kernel repeats its first
row when the output is one pixel wide; this kernel does not (training sizes are at least 64).
"""

from __future__ import annotations

import ctypes
import functools
import math
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import native
from .transforms import interpolate_options, resize

SOURCE = Path(__file__).with_name("resample_kernel.c")
# Sides up to this take the kernel (its scratch is side x output side floats); larger ones, rare once JPEGs are
# decoded at DCT scale, PyTorch's path. So do shrink factors over MAX_SHRINK: taps' probe is 4 x factor rows.
MAX_SIDE = 8192
MAX_SHRINK = 64
_SIGNAL = torch.rand(MAX_SIDE, generator=torch.Generator().manual_seed(0))  # taps' check: one value per input


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    i64, p = ctypes.c_int64, ctypes.c_void_p
    lib.resample_u8.argtypes = [p, i64, i64, i64, i64, i64, i64, i64, i64, p, p, p, i64, p, p, p, i64,
                                ctypes.c_float, p]
    lib.resample_u8.restype = ctypes.c_int
    lib.resample_probe.argtypes = [p, p, i64, i64]
    lib.resample_probe.restype = None
    lib.resample_taps.argtypes = [p, p, i64, i64, i64, ctypes.c_double, p, p, p]
    lib.resample_taps.restype = ctypes.c_int
    return lib


_library = native.Library(SOURCE, _declare, "GOOGLENET_NATIVE_RESAMPLE")
kernel = _library.get  # the loaded library, built on first use; None where it cannot be (no compiler, or off)


class Taps(NamedTuple):
    """One axis's weights: output i takes inputs start[i] .. start[i] + count[i] - 1 with weights[i, :count[i]]."""
    start: Tensor  # int32, n_out
    count: Tensor  # int32, n_out
    weights: Tensor  # float32, n_out x width (zero past count)
    width: int


@functools.lru_cache(maxsize=2048)
def taps(n_in: int, n_out: int, mode: str) -> Taps:
    """F.interpolate's own float32 weights along one axis (the kernel library must be loaded).

    Interpolating a unit impulse at input j gives j's weight in every output. One probe row holds impulses every
    ``period`` inputs; ``period`` exceeds every output's band of inputs (at most 4 x the shrink factor + 2 wide,
    bicubic's), so within a window of ``period`` inputs around output i each row has one impulse, and its response
    is that input's weight. ``period`` rows cost period x n_in, not n_in^2, and the bookkeeping runs in C: a crop
    size seen for the first time costs about as much as one resize. The weights are checked against F.interpolate's
    response to a random signal, probed with them."""
    lib = kernel()
    if n_in > len(_SIGNAL):
        raise ValueError(f"taps: {n_in} inputs, at most {len(_SIGNAL)}")
    ratio = n_in / n_out
    period = 4 * math.ceil(max(ratio, 1.0)) + 4
    probe = torch.empty(period + 1, 1, 1, n_in)
    lib.resample_probe(probe.data_ptr(), _SIGNAL.data_ptr(), n_in, period)
    response = F.interpolate(probe, size=(1, n_out), mode=mode, **interpolate_options(mode)).contiguous()
    start, count = torch.empty(n_out, dtype=torch.int32), torch.empty(n_out, dtype=torch.int32)
    weights = torch.empty(n_out, period)
    status = lib.resample_taps(response.data_ptr(), _SIGNAL.data_ptr(), n_in, n_out, period, ratio,
                               start.data_ptr(), count.data_ptr(), weights.data_ptr())
    if status == -2:
        raise MemoryError("resample kernel: out of memory")
    if status != 0:
        raise AssertionError(f"resample taps for {mode} {n_in} -> {n_out} disagree with F.interpolate")
    width = int(count.max())  # the band, usually a fraction of the period: the cache keeps only that
    return Taps(start, count, weights[:, :width].contiguous(), width)


def _layout_ok(crop: Tensor) -> bool:
    channels, stride_x = crop.shape[0], crop.stride(2)
    return stride_x == 1 or (channels > 1 and crop.stride(0) == 1 and stride_x == channels)


def resize_u8(crop: Tensor, size: Sequence[int], mode: str) -> Tensor:
    """crop: C x H x W uint8 (any view of a planar or interleaved image) -> C x size[0] x size[1] float32 in [0, 1],
    resized with ``mode`` (one of ``transforms.INTERPOLATIONS``)."""
    if crop.dtype != torch.uint8:
        raise TypeError(f"resize_u8 takes uint8 pixels, got {crop.dtype}")
    channels, height, width = crop.shape
    out_h, out_w = (int(s) for s in size)
    if (not _library.available() or crop.device.type != "cpu" or min(channels, height, width, out_h, out_w) <= 0
            or max(height, width) > MAX_SIDE
            or max(height / out_h, width / out_w) > MAX_SHRINK or not _layout_ok(crop)):
        return _pytorch(crop, (out_h, out_w), mode)
    return resample_u8(crop, out_h, out_w, mode)


# A custom op, so torch.compile and torch.export can hold the ctypes call (taps' too) as one opaque node.
@torch.library.custom_op("googlenet::resample_u8", mutates_args=(), device_types="cpu")
def resample_u8(crop: Tensor, out_h: int, out_w: int, mode: str) -> Tensor:
    """The C kernel's resize of a crop that resize_u8 found it takes."""
    lib = _library.loaded()
    channels, height, width = crop.shape
    rows, cols = taps(height, out_h, mode), taps(width, out_w, mode)
    out = torch.empty(channels, out_h, out_w)
    status = lib.resample_u8(crop.data_ptr(), channels, height, width, *crop.stride(), out_h, out_w,
                             rows.start.data_ptr(), rows.count.data_ptr(), rows.weights.data_ptr(), rows.width,
                             cols.start.data_ptr(), cols.count.data_ptr(), cols.weights.data_ptr(), cols.width,
                             1 / 255, out.data_ptr())
    if status == 1:
        raise MemoryError("resample kernel: out of memory for its scratch")
    if status != 0:  # a layout _layout_ok let through: a bug, but the PyTorch path still gives the right answer
        return _pytorch(crop, (out_h, out_w), mode)
    return out


@resample_u8.register_fake
def _(crop, out_h, out_w, mode):
    return crop.new_empty((crop.shape[0], out_h, out_w), dtype=torch.float32)


def _pytorch(crop: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """The definition, in PyTorch: contiguous float first (F.interpolate runs slower on a channels-last view)."""
    x = crop.to(torch.float32, memory_format=torch.contiguous_format).div_(255)
    return resize(x, size, mode).clamp_(0, 1)
