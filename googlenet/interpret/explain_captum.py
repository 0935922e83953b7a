"""Attribution with Captum: Grad-CAM (ReLU'd, as Selvaraju et al.), integrated gradients, occlusion.

Captum is the optional ``[explain]`` extra; without it the one UserError line says how to install it.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .common import ModelInput, resolve_layer

METHODS = ("gradcam", "integrated-gradients", "occlusion")


class _Logits(nn.Module):
    """The model seen from pixels in 0..1, so attributions are over the pixels a user sees."""

    def __init__(self, model: nn.Module, prep: ModelInput) -> None:
        super().__init__()
        self.model, self.prep = model, prep

    def forward(self, pixels: Tensor) -> Tensor:
        out = self.model(self.prep(pixels))
        return out if isinstance(out, Tensor) else out[0]


def explain(model: nn.Module, image: Tensor, method: str = "gradcam", *, target: Optional[int] = None,
            layer: str = "inception5b", steps: int = 50, max_steps: int = 400, tolerance: float = 0.05,
            window: int = 0, grayscale: Optional[bool] = None,
            internal_batch_size: int = 16) -> tuple[Tensor, int, dict]:
    """image: 3 x H x W pixels in 0..1 at the model's size. Returns (H x W attribution map, target, extras).

    gradcam: ``LayerGradCam`` at ``layer`` with ReLU, upsampled bilinearly to the image. integrated-gradients:
    black baseline, Gauss-Legendre steps summed over channels, from ``steps`` doubled up to ``max_steps`` until the
    completeness error is within ``tolerance`` of F(x) - F(baseline); extras hold the check (attribution_sum,
    output_gap, completeness_error, steps). occlusion: a grey square of ``window`` pixels (default 1/8 of the side)
    with stride half of it.
    """
    if method not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    try:
        import captum.attr as attr
    except ImportError:
        raise UserError("explain needs Captum: pip install 'googlenet[explain]'") from None
    model = model.eval()
    f = _Logits(model, ModelInput(model, grayscale))
    x = image.unsqueeze(0).float()
    with torch.no_grad():
        logits = f(x)
    if target is None:
        target = int(logits.argmax(1))
    if not 0 <= target < logits.shape[1]:
        raise UserError(f"target class {target} out of range (the model has {logits.shape[1]} classes)")
    extras: dict = {"score": float(logits[0, target])}
    if method == "gradcam":
        cam = attr.LayerGradCam(f, resolve_layer(model, layer)).attribute(x, target=target, relu_attributions=True)
        heat = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    elif method == "integrated-gradients":
        a = _integrated_gradients(attr.IntegratedGradients(f), f, x, float(logits[0, target]), target, steps,
                                  max_steps, tolerance, internal_batch_size, extras)
        heat = a[0].sum(0)
    else:
        side = window or max(2, x.shape[-1] // 8)
        stride = max(1, side // 2)
        a = attr.Occlusion(f).attribute(x, target=target, sliding_window_shapes=(3, side, side),
                                        strides=(3, stride, stride), baselines=0.5)
        heat = a[0].sum(0)
    return heat.detach(), target, extras


def _integrated_gradients(ig, f: nn.Module, x: Tensor, score: float, target: int, steps: int, max_steps: int,
                          tolerance: float, batch: int, extras: dict) -> Tensor:
    """Integrated gradients from a black baseline, with the completeness check of Sundararajan et al. (2017,
    section 3): the attributions must add up to F(x) - F(baseline), and where they do not, their advice is more
    steps (20 to 300 were enough for them). Doubles the steps until the error is within ``tolerance`` of the gap or
    ``max_steps`` is reached; ``extras`` gets the final figures, so a map that did not converge says so."""
    if not tolerance >= 0:  # also nan
        raise UserError(f"tolerance must be a number >= 0, got {tolerance}")
    if steps < 1:  # doubling from 0 would never end
        raise UserError(f"steps must be at least 1, got {steps}")
    baseline = torch.zeros_like(x)
    with torch.no_grad():
        gap = score - float(f(baseline)[0, target])  # score: F(x), the logit explain already computed
    n = steps
    while True:
        a, delta = ig.attribute(x, baselines=baseline, target=target, n_steps=n, internal_batch_size=batch,
                                return_convergence_delta=True)
        error = abs(float(a.sum()) - gap)
        if error <= tolerance * abs(gap) or n >= max_steps:
            break
        n = min(2 * n, max_steps)
    extras.update(attribution_sum=float(a.sum()), output_gap=gap, delta=float(delta.abs().sum()), steps=n,
                  completeness_error=error / abs(gap) if gap else None, converged=error <= tolerance * abs(gap))
    return a


def overlay(image: Tensor, heat: Tensor, alpha: float = 0.5) -> Tensor:
    """The heat map (normalised to its absolute maximum) drawn over the image with matplotlib's 'jet' colours."""
    from matplotlib import colormaps

    h = heat.abs() if heat.min() < 0 else heat
    h = (h / h.max().clamp(min=1e-12)).numpy()
    colours = torch.from_numpy(colormaps["jet"](h)[..., :3]).permute(2, 0, 1).float()
    return (1 - alpha) * image + alpha * colours
