"""DeepDream as google/deepdream's notebook does it (Mordvintsev et al., 2015).

Gradient ascent on the L2 norm of a layer (objective_L2: the gradient is the activation itself), each step
normalised by the mean absolute gradient (step size 1.5 in the notebook's 0..255 pixels), random roll jitter 32,
4 octaves at scale 1.4 with the detail carried from octave to octave, 10 steps an octave; pixels clipped to the
valid range. Our own PyTorch implementation of the notebook's maths.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .common import LayerCapture, ModelInput


def dream(model: nn.Module, image: Tensor, layer: str, *, octaves: int = 4, octave_scale: float = 1.4,
          steps: int = 10, step_size: float = 1.5 / 255, jitter: int = 32, seed: int = 0,
          grayscale: Optional[bool] = None, device: str | torch.device = "cpu") -> Tensor:
    """image: 3 x H x W pixels in 0..1; returns the dreamed image, same shape, pixels in 0..1."""
    model = model.eval().to(device).requires_grad_(False)
    prep = ModelInput(model, grayscale)
    g = torch.Generator().manual_seed(seed)
    base = image.unsqueeze(0).to(device).float()
    pyramid = [base]
    for _ in range(octaves - 1):
        h, w = pyramid[-1].shape[-2:]
        pyramid.append(F.interpolate(pyramid[-1], size=(max(1, round(h / octave_scale)), max(1, round(w / octave_scale))),
                                     mode="bilinear", align_corners=False))
    detail = torch.zeros_like(pyramid[-1])
    with LayerCapture(model, layer, stop=True) as cap:
        try:  # the smallest octave must still pass the net's poolings down to the layer
            with torch.no_grad():
                cap.run(prep(pyramid[-1]))
        except RuntimeError as e:
            if not any(m in str(e) for m in ("too small", "greater than", "smaller than")):
                raise  # not a size error (out of memory, a device error): as it is
            h, w = pyramid[-1].shape[-2:]
            raise UserError(f"the image is too small to dream at {layer}: its smallest octave is {h}x{w} px "
                            f"({octaves} octaves at x{octave_scale:g}); use a larger --size or fewer --octaves") \
                from None
        for octave_base in reversed(pyramid):
            detail = F.interpolate(detail, size=octave_base.shape[-2:], mode="bilinear", align_corners=False)
            x = (octave_base + detail).clamp(0, 1)
            # The notebook's 32-pixel roll is for images of 224+ pixels; on a small image (a 64x64 model's) a roll
            # of half the image wrecks the ascent, so it is scaled by side/224 below that.
            j = min(jitter, max(1, min(x.shape[-2:]) * jitter // 224)) if jitter else 0
            for _ in range(steps):
                ox, oy = torch.randint(-j, j + 1, (2,), generator=g).tolist()
                x = x.roll((ox, oy), (-1, -2)).detach().requires_grad_(True)
                inp = prep(ModelInput.to_gray(x[0]).unsqueeze(0) if prep.grayscale else x)
                (cap.run(inp).pow(2).sum() / 2).backward()  # objective_L2
                with torch.no_grad():
                    x = x + step_size / x.grad.abs().mean().clamp(min=1e-12) * x.grad
                    x = x.roll((-ox, -oy), (-1, -2)).clamp(0, 1)
            detail = x - octave_base
    out = x.detach()[0].cpu()
    return ModelInput.to_gray(out) if prep.grayscale else out
