"""The paper recipe's photometric distortions on one image, in place: ``norm(lighting(jitter(x)))`` with
torchvision's ColorJitter, AlexNet's PCA lighting and Normalize, in one C kernel (photometric_kernel.c, built on
first use by ``googlenet.native``) instead of 8-12 tensor operations.

The random draws are the transforms' own (``ColorJitter.make_params``, ``Lighting.shift``), made in the order the
PyTorch path makes them, so a seeded run draws the same distortions; the numbers agree to float rounding (each
operation within 1-2 float ulps: within 2e-6 for the recipe's jitter of 0.4, more for much stronger jitter, whose
factors amplify it; tests/test_photometric.py). Without a C compiler, with ``GOOGLENET_NATIVE_PHOTOMETRIC=0``, for
hue jitter (which the kernel does not do) or an input it does not take, the transforms themselves run. ``norm`` is
fused when it is a ``Normalize`` or a ``ModelNormalize`` that amounts to one (RGB, 0..1 pixels, no grey); any other
model preprocessing runs after the kernel, in PyTorch.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor
from torchvision.transforms import v2

from .. import native
from .transforms import Lighting, ModelNormalize, Normalize

SOURCE = Path(__file__).with_name("photometric_kernel.c")


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    f, i64, p = ctypes.c_float, ctypes.c_int64, ctypes.c_void_p
    lib.photometric.argtypes = [p, i64, p, f, f, f, p, p, p]
    lib.photometric.restype = None
    return lib


_library = native.Library(SOURCE, _declare, "GOOGLENET_NATIVE_PHOTOMETRIC")
kernel = _library.get  # the loaded library, built on first use; None where it cannot be (no compiler, or off)


def distort_(x: Tensor, jitter: Optional[v2.ColorJitter], lighting: Lighting,
             norm: Callable[[Tensor], Tensor]) -> Tensor:
    """``norm(lighting(jitter(x)))`` (``jitter`` may be None) for x: 3 x H x W float32 pixels in [0, 1] that the
    caller owns: the kernel overwrites x, and returns x (``norm`` fused) or ``norm(x)``."""
    if (not _library.available() or x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 3
            or x.shape[0] != 3 or not x.is_contiguous() or x.requires_grad
            or (jitter is not None and jitter.hue is not None)):
        return norm(lighting(x if jitter is None else jitter(x)))
    order, factors = torch.arange(4), [-1.0, -1.0, -1.0]  # a factor below 0: that distortion is off
    if jitter is not None:
        params = jitter.make_params([x])  # ColorJitter's draws, as its forward makes them
        order = params["fn_idx"]
        for i, key in enumerate(("brightness_factor", "contrast_factor", "saturation_factor")):
            if params[key] is not None:
                factors[i] = float(params[key])
    shift = lighting.shift()  # Lighting's draw, after the jitter's
    fused = _as_normalize(norm)
    order = order.to(torch.int64).contiguous()
    shift = None if shift is None else shift.to(torch.float32).contiguous()
    mean, std = (None, None) if fused is None else (fused.mean.contiguous(), fused.std.contiguous())
    photometric_(x, order, *factors, shift, mean, std)
    return x if fused is not None else norm(x)


# A custom op, so torch.compile and torch.export can hold the ctypes call as one opaque node.
@torch.library.custom_op("googlenet::photometric_", mutates_args=("x",), device_types="cpu")
def photometric_(x: Tensor, order: Tensor, brightness: float, contrast: float, saturation: float,
                 shift: Optional[Tensor], mean: Optional[Tensor], std: Optional[Tensor]) -> None:
    """The C kernel, in place on x (as distort_ found it takes x): the jitter's factors (below 0: off) in
    ``order``, then the lighting ``shift`` and the normalisation by ``mean`` and ``std`` (each None: off)."""
    _library.loaded().photometric(x.data_ptr(), x.shape[1] * x.shape[2], order.data_ptr(), brightness, contrast,
                                  saturation, *(None if t is None else t.data_ptr() for t in (shift, mean, std)))


@photometric_.register_fake
def _(x, order, brightness, contrast, saturation, shift, mean, std):
    return None


def _as_normalize(norm) -> Optional[Normalize]:
    """``norm`` as a plain float32 CPU ``Normalize`` of 3 channels, which the kernel applies itself; else None."""
    if isinstance(norm, ModelNormalize):
        norm = norm.as_normalize()
    if not isinstance(norm, Normalize):
        return None
    mean, std = norm.mean, norm.std
    plain = (mean.dtype == std.dtype == torch.float32 and mean.numel() == std.numel() == 3
             and mean.device.type == std.device.type == "cpu")
    return norm if plain else None
