"""Feature visualisation as Lucid does it (Olah et al., "Feature Visualization", Distill 2017; lucid.optvis).

Defaults are Lucid's published ones: an image parameterised in Fourier space with 1/frequency scaling
(``param.spatial.fft_image``, decay_power 1, init std 0.01), colours decorrelated with Lucid's ImageNet
colour-correlation square root (``param.color``), sigmoid to pixels; ``transform.standard_transforms`` (pad 12,
jitter 8, random scale 0.9..1.1, random rotation -10..10 degrees, jitter 4); Adam lr 0.05, 512 steps, 128 x 128;
and ``render_vis``'s ``relu_gradient_override=True``: the redirected ReLU gradient of
``lucid/misc/redirected_relu_grad.py``, without which a channel that is off on the starting image never gets a
gradient and stays black. Two departures, both measured in docs/interpret.md: the redirection is kept for every
step (Lucid returns to the plain gradient after step 16, and a channel that fires on few images has not started by
then and stays black), and the robustness padding is the pixel the weights' normalisation maps to 0, i.e. what the
net's own zero padding stands for (Lucid pads with 0.5, about ImageNet's mean; a net trained on black backgrounds
reads a mid-grey frame as an object). Lucid's code is TensorFlow; this is our own PyTorch implementation of the
same maths.
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .common import LayerCapture, ModelInput

# lucid/optvis/param/color.py: square root of the ImageNet colour correlation matrix.
COLOR_CORRELATION_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION = COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()
MAX_DECAY_POWER = 4.0  # the Fourier scaling exponents visualize accepts: 0..this (Lucid's default is 1)


class RedirectedReLU(torch.autograd.Function):
    """ReLU forward; backward as Lucid's ``redirected_relu_grad``: the ReLU gradient, except for an image whose
    ReLU gradient is zero everywhere at this op (the unit never fired), where the incoming gradient passes through
    unless it would push an already negative input lower."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        negative = x < 0
        relu_grad = grad.masked_fill(negative, 0)
        redirected = grad.masked_fill(negative & (grad > 0), 0)
        fired = relu_grad.flatten(1).norm(dim=1).gt(0).view(-1, *[1] * (grad.dim() - 1))
        return torch.where(fired, relu_grad, redirected)


@contextlib.contextmanager
def redirected_relus(model: nn.Module):
    """Every conv -> (BN) -> ReLU block of the model backpropagates through RedirectedReLU while inside.

    Done with forward hooks so the model's code (which TorchScript export compiles) is untouched: a hook on the
    block's ``bn`` (an Identity without BatchNorm) keeps the pre-activation and hands the in-place ReLU a copy; a
    hook on the block replaces its output with RedirectedReLU of the kept pre-activation (equal values).
    """
    from ..models.googlenet import BasicConv2d

    handles, kept = [], {}
    for block in model.modules():
        if isinstance(block, BasicConv2d):
            def keep(module, inputs, output, key=id(block)):
                kept[key] = output
                return output.clone()

            def redirect(module, inputs, output, key=id(block)):
                return RedirectedReLU.apply(kept.pop(key))

            handles += [block.bn.register_forward_hook(keep), block.register_forward_hook(redirect)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class FFTImage(nn.Module):
    """``batch`` images (``channels`` x size x size) whose parameters are their scaled Fourier spectra."""

    def __init__(self, batch: int, channels: int, size: int, *, decay_power: float = 1.0, std: float = 0.01,
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        self.size = size
        fy = torch.fft.fftfreq(size, dtype=torch.float64).view(-1, 1)  # in float64 as Lucid's numpy, then cast
        fx = torch.fft.rfftfreq(size, dtype=torch.float64).view(1, -1)
        freqs = (fx ** 2 + fy ** 2).sqrt()
        scale = (1.0 / freqs.clamp(min=1.0 / size) ** decay_power).float()
        # Lucid multiplies by sqrt(w * h) because TensorFlow's irfft2d divides by w * h; with norm="ortho" (as
        # lucent does) that factor is already in the transform. Counting it twice made every image 128 times too
        # strong at 128 px: pixels saturated to black and white speckle after a few steps.
        self.register_buffer("scale", scale)
        self.spectrum = nn.Parameter(torch.randn(batch, channels, *freqs.shape, 2, generator=generator) * std)

    def forward(self) -> Tensor:
        spec = torch.view_as_complex(self.spectrum) * self.scale
        img = torch.fft.irfft2(spec, s=(self.size, self.size), norm="ortho")
        return img / 4.0  # Lucid's fft_image divides by 4 so the sigmoid starts near 0.5


def to_pixels(raw: Tensor) -> Tensor:
    """Lucid's ``to_valid_rgb(decorrelate=True, sigmoid=True)``; a one-channel image skips the colour matrix."""
    if raw.shape[1] == 3:
        raw = torch.einsum("nchw,dc->ndhw", raw, COLOR_CORRELATION.to(raw))
    return torch.sigmoid(raw)


def robustness_transforms(x: Tensor, g: torch.Generator, pad_value: Tensor | float = 0.5) -> Tensor:
    """lucid.optvis.transform.standard_transforms: pad 12 (constant ``pad_value``; Lucid's is 0.5), jitter 8,
    scale, rotate, jitter 4."""

    def jitter(t: Tensor, d: int) -> Tensor:
        dy, dx = torch.randint(0, d + 1, (2,), generator=g).tolist()
        return t[..., dy:t.shape[-2] - d + dy, dx:t.shape[-1] - d + dx]

    x = F.pad(x - pad_value, (12, 12, 12, 12)) + pad_value
    x = jitter(x, 8)
    scale = [1 + (i - 5) / 50 for i in range(11)][int(torch.randint(0, 11, (1,), generator=g))]
    angles = list(range(-10, 11)) + 5 * [0]  # Lucid's list: a quarter of the draws are not rotated
    angle = math.radians(angles[int(torch.randint(0, len(angles), (1,), generator=g))])
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale  # affine_grid maps output to input coordinates
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return jitter(x, 4)


def objective_values(act: Tensor, objective: str, channels: Sequence[int],
                     direction: Optional[Tensor] = None) -> Tensor:
    """Per-image value to maximise. act: N x C x H x W; image i targets channels[i] (or the direction)."""
    if objective == "direction":
        d = direction.to(act).view(1, -1, 1, 1)
        return (act * d).sum(1).mean((-2, -1))
    idx = torch.tensor(list(channels), device=act.device)
    chosen = act[torch.arange(act.shape[0], device=act.device), idx]  # N x H x W
    if objective == "neuron":
        return chosen[:, chosen.shape[-2] // 2, chosen.shape[-1] // 2]
    return chosen.mean((-2, -1))


def diversity(act: Tensor) -> Tensor:
    """Lucid's ``objectives.diversity``: minus the mean cosine similarity between the images' Gram matrices."""
    n, c = act.shape[:2]
    flat = act.reshape(n, c, -1)
    grams = F.normalize(torch.bmm(flat, flat.transpose(1, 2)).reshape(n, -1), dim=1)
    sim = grams @ grams.t()
    return -(sim.sum() - sim.diagonal().sum()) / max(n * (n - 1), 1)


def visualize(model: nn.Module, layer: str, channels: Sequence[int] = (0,), *, objective: str = "channel",
              direction: Optional[Tensor] = None, diversity_images: int = 1, diversity_weight: float = 1e2,
              steps: int = 512, size: int = 128, lr: float = 0.05, seed: int = 0, grayscale: Optional[bool] = None,
              transforms: bool = True, redirect_relu: bool = True, restarts: int = 1, decay_power: float = 1.0,
              device: str | torch.device = "cpu", progress=None) -> Tensor:
    """Optimises one image per channel (or ``diversity_images`` images of one channel); returns N x 3 x size x size
    pixels in 0..1. Deterministic for a fixed seed on a given device.

    restarts: optimise that many images from different random starts for each one asked for (in one batch), and
    keep the one whose objective is highest as its PNG will be read (untransformed, at the model's input size).
    The objective has many local optima; 1 is Lucid's single start. Each start draws its own robustness transforms.

    decay_power: the Fourier image's 1/frequency^decay_power scaling (Lucid's ``fft_image`` default: 1). Higher
    values favour large shapes early in the ascent.

    objective: "channel" (mean activation), "neuron" (the centre position) or "direction" (``direction``: a vector
    over the layer's channels; one image). For a model trained on grey images the image is grey.
    """
    if objective not in ("channel", "neuron", "direction"):
        raise ValueError(f"objective must be channel, neuron or direction, not {objective!r}")
    model = model.eval().to(device).requires_grad_(False)
    prep = ModelInput(model, grayscale)
    if objective == "direction":
        if direction is None:
            raise ValueError("objective 'direction' needs a direction vector")
        channels = [0]
    if diversity_images > 1:
        if len(channels) != 1:
            raise ValueError("diversity makes several images of one channel; give exactly one channel")
        if restarts > 1:
            raise ValueError("restarts keep the best of several images, diversity wants them all: use one")
        channels = list(channels) * diversity_images
    if restarts < 1:
        raise ValueError(f"restarts must be at least 1, got {restarts}")
    if not 0 <= decay_power <= MAX_DECAY_POWER:
        raise ValueError(f"decay_power must be in 0..{MAX_DECAY_POWER:g}, got {decay_power}")
    n, channels = len(channels), list(channels) * restarts  # start k of image i is image k * n + i
    g = torch.Generator().manual_seed(seed)
    param = FFTImage(len(channels), 1 if prep.grayscale else 3, size, decay_power=decay_power,
                     generator=g).to(device)
    opt = torch.optim.Adam(param.parameters(), lr=lr)
    pad = prep.neutral_pixels().to(device)
    pad = pad.mean(1, keepdim=True) if prep.grayscale else pad
    redirect = redirected_relus(model) if redirect_relu else contextlib.nullcontext()
    # redirect first: its hooks must run before the capture's when the layer is a conv block itself
    with redirect, LayerCapture(model, layer, stop=True) as cap:
        for step in range(steps):
            x = to_pixels(param())
            if transforms:  # each start its own draws: starts that shared them settled in the same optimum
                x = torch.cat([robustness_transforms(part, g, pad) for part in x.split(n)])
            # Antialiased, as every reader of the saved PNG resizes it (data.transforms.resize): without it a
            # 128 px image shrunk to a 64 px model is optimised through aliasing the read-back image does not have.
            x = F.interpolate(x, size=(prep.size, prep.size), mode="bilinear", align_corners=False, antialias=True)
            act = cap.run(prep(x))
            _check_channels(act, channels, layer)
            loss = -objective_values(act, objective, channels, direction).sum()
            if diversity_images > 1:
                loss = loss - diversity_weight * diversity(act)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress is not None:
                progress(step + 1, steps)
        with torch.no_grad():
            out = to_pixels(param())
            if restarts > 1:
                x = F.interpolate(out, size=(prep.size, prep.size), mode="bilinear", align_corners=False,
                                  antialias=True)
                score = objective_values(cap.run(prep(x)), objective, channels, direction).view(restarts, n)
                out = out.view(restarts, n, *out.shape[1:])[score.argmax(0), torch.arange(n, device=out.device)]
    return out.cpu().expand(-1, 3, -1, -1).clone()


def _check_channels(act: Tensor, channels: Sequence[int], layer: str) -> None:
    if act.dim() != 4:
        raise UserError(f"layer {layer} gives a {act.dim()}-D output, not a feature map")
    bad = [c for c in channels if not 0 <= c < act.shape[1]]
    if bad:
        raise UserError(f"channel {bad[0]} out of range: {layer} has {act.shape[1]} channels (0..{act.shape[1] - 1})")


def channel_means(model: nn.Module, layer: str, pixels: Tensor, *, grayscale: Optional[bool] = None,
                  batch_size: int = 64) -> Tensor:
    """Mean activation of every channel of ``layer`` for images already at the model's size: N x C."""
    prep = ModelInput(model, grayscale)
    rows = []
    with torch.no_grad(), LayerCapture(model, layer, stop=True) as cap:
        for i in range(0, len(pixels), batch_size):
            rows.append(cap.run(prep(pixels[i:i + batch_size])).mean((-2, -1)))
    return torch.cat(rows)
