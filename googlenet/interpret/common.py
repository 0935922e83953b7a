"""What every interpretability tool shares: layer names, the model's preprocessing, reading and writing pictures."""

from __future__ import annotations

import os
import re
from typing import Optional

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..weights import default_preprocessing


def check_device(name: str) -> torch.device:
    """``--device`` of the interpretability commands: cpu or cuda[:N], refused in one line when CUDA is absent."""
    if name != "cpu" and not re.fullmatch(r"cuda(:\d+)?", name):
        raise UserError(f"--device must be cpu or cuda[:N], got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for, but CUDA is not available here")
    return torch.device(name)


def layer_names(model: nn.Module) -> list[str]:
    """The model's own module names (``conv1``, ``inception4c``, ``inception4c.branch3``, ...), in forward order.

    Only modules whose output is a 4-D feature map are useful here; the head (avgpool, dropout, fc) and the
    auxiliary classifiers are left out.
    """
    skip = ("aux1", "aux2", "avgpool", "dropout", "fc")
    return [n for n, _ in model.named_modules() if n and not n.split(".")[0] in skip]


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    names = layer_names(model)
    if name not in names:
        close = [n for n in names if n.startswith(name.split(".")[0])][:6] or names[:6]
        raise UserError(f"no layer {name!r} in {getattr(model, 'arch_name', 'the model')} (e.g. {', '.join(close)};"
                        f" 'googlenet layers --weights W' lists them all)")
    return model.get_submodule(name)


class StopForward(Exception):
    """Raised by a stopping LayerCapture's hook once the layer has run."""


class LayerCapture:
    """Records one layer's output on every forward pass (a forward hook), for use as ``with LayerCapture(...)``."""

    def __init__(self, model: nn.Module, layer: str, *, stop: bool = False) -> None:
        self.model = model
        self.module = resolve_layer(model, layer)
        self.stop = stop
        self.output: Optional[Tensor] = None

    def run(self, x: Tensor) -> Tensor:
        """The layer's output for model input ``x``; with ``stop`` the layers after it are not computed (cheaper,
        and images too small for the rest of the network still work)."""
        try:
            self.model(x)
        except StopForward:
            pass
        return self.output

    def __enter__(self) -> "LayerCapture":
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def _hook(self, module, inputs, output) -> None:
        self.output = output
        if self.stop:
            raise StopForward

    def __exit__(self, *exc) -> None:
        self._handle.remove()


class ModelInput:
    """Turns pixels in 0..1 (RGB, N x 3 x H x W) into what the model was trained on, from its weights metadata.

    The keys ``channel_order`` ("RGB"|"BGR"), ``pixel_range`` (1|255) and ``grayscale`` are read with their
    defaults, so files written before those keys existed keep working; ``grayscale`` may be overridden.
    """

    def __init__(self, model: nn.Module, grayscale: Optional[bool] = None) -> None:
        pre = getattr(model, "preprocessing", None) or default_preprocessing()
        self.size = int(pre["input_size"])
        self.resize_size = pre.get("resize_size")
        self.interpolation = pre.get("interpolation", "bilinear")
        self.pixel_range = float(pre.get("pixel_range", 1))
        self.bgr = str(pre.get("channel_order", "RGB")).upper() == "BGR"
        self.grayscale = bool(pre.get("grayscale", False)) if grayscale is None else grayscale
        self.mean = torch.tensor(pre["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(pre["std"], dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, pixels: Tensor) -> Tensor:
        x = pixels.expand(-1, 3, -1, -1) if pixels.shape[1] == 1 else pixels
        if self.bgr:
            x = x.flip(1)
        x = x * self.pixel_range
        return (x - self.mean.to(x)) / self.std.to(x)

    def neutral_pixels(self) -> Tensor:
        """The pixel (1 x 3 x 1 x 1, RGB, 0..1) that the normalisation maps to 0: what the net's zero padding is."""
        m = self.mean / self.pixel_range
        return m.flip(1) if self.bgr else m

    def load(self, path: str | os.PathLike) -> Tensor:
        """An image file as the model sees it before normalisation: 3 x size x size, 0..1 (grey if grayscale)."""
        from ..data.transforms import eval_transform

        return self._read(path, eval_transform(self.size, self.resize_size, None, None,
                                               interpolation=self.interpolation, normalize=False))

    def load_native(self, path: str | os.PathLike) -> Tensor:
        """An image file at its own size, not cropped: 3 x H x W, 0..1 (grey if grayscale)."""
        return self._read(path, lambda img: img.float() / 255)

    def _read(self, path: str | os.PathLike, view) -> Tensor:
        """``view`` of the file's uint8 pixels, greyed if the model is grey; a bad file is one UserError line."""
        from ..data.images import BadImage, load_image

        try:
            x = view(load_image(path))
        except BadImage as e:
            raise UserError(f"{path}: {e}") from None
        return self.to_gray(x) if self.grayscale else x

    @staticmethod
    def to_gray(x: Tensor) -> Tensor:
        """ITU-R 601 luma, replicated to 3 channels (what PIL's convert('L') and Fashion-MNIST's images are)."""
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x * w).sum(-3, keepdim=True).expand_as(x).clone()


def save_png(pixels: Tensor, path: str | os.PathLike) -> None:
    """Writes 3 x H x W pixels in 0..1 as an 8-bit PNG, atomically."""
    from PIL import Image

    from ..fileio import atomic_path

    arr = (pixels.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    with atomic_path(path) as tmp:
        Image.fromarray(arr, "RGB").save(tmp, format="PNG")
