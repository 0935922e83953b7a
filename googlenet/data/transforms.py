"""Training and evaluation transforms: the paper's sampling (section 6) and the eval resize + centre crop.

All transforms take the 3 x H x W uint8 RGB tensors of ``googlenet.data.images.load_image`` and return normalised
float tensors. Randomness comes from torch's global generator, so a seeded run (and each DataLoader worker, seeded
by PyTorch from it) draws the same crops every time.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

from .images import MAX_PIXELS, BadImage

# The paper: "resize with a random interpolation among bilinear, area, nearest and cubic, with equal probability".
# F.interpolate's "area" is adaptive average pooling, i.e. OpenCV's INTER_AREA when shrinking.
INTERPOLATIONS = ("bilinear", "area", "nearest", "bicubic")

# AlexNet's PCA lighting noise (Krizhevsky et al. 2012): eigen decomposition of ImageNet's RGB covariance, in the
# [0, 1] pixel scale, as used by fb.resnet.torch and timm.
PCA_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
PCA_EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009],
                           [-0.5808, -0.0045, -0.8140],
                           [-0.5836, -0.6948, 0.4203]])


def interpolate_options(mode: str) -> dict:
    """F.interpolate's keyword arguments for ``mode`` in this project: antialiased bilinear/bicubic."""
    return {"align_corners": False, "antialias": True} if mode in ("bilinear", "bicubic") else {}


def resize(x: Tensor, size: Sequence[int], mode: str) -> Tensor:
    """x: C x H x W float -> C x size[0] x size[1]; antialiased when shrinking with bilinear/bicubic."""
    return F.interpolate(x.unsqueeze(0), size=tuple(size), mode=mode, **interpolate_options(mode)).squeeze(0)


class PaperCrop:
    """Crops of ``scale`` (8%..100%) of the image area with aspect ratio in ``ratio`` ([3/4, 4/3]), resized to
    ``size`` with an interpolation drawn uniformly from INTERPOLATIONS. Returns float in [0, 1]."""

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> None:
        self.size, self.scale, self.ratio = size, tuple(scale), tuple(ratio)

    def __call__(self, img: Tensor) -> Tensor:
        # torchvision's sampler: 10 tries at a crop of the drawn area and aspect, else the central crop.
        top, left, h, w = v2.RandomResizedCrop.get_params(img, list(self.scale), list(self.ratio))
        crop = img[:, top:top + h, left:left + w].float().div_(255)
        mode = INTERPOLATIONS[int(torch.randint(len(INTERPOLATIONS), ()))]
        return resize(crop, (self.size, self.size), mode).clamp_(0, 1)


class Lighting:
    """AlexNet-style PCA lighting noise: adds eigvec @ (alpha * eigval) to every pixel, alpha ~ N(0, std)."""

    def __init__(self, std: float) -> None:
        self.std = std

    def shift(self) -> Optional[Tensor]:
        """This draw's RGB offset (3 floats), or None when the noise is off."""
        if self.std <= 0:
            return None
        alpha = torch.randn(3) * self.std
        return PCA_EIGVEC @ (alpha * PCA_EIGVAL)

    def __call__(self, x: Tensor) -> Tensor:
        rgb = self.shift()
        return x if rgb is None else x + rgb.view(3, 1, 1)


class RandomFlip:
    def __call__(self, x: Tensor) -> Tensor:
        return x.flip(-1) if bool(torch.rand(()) < 0.5) else x


class Normalize:
    """Mean subtraction (the paper) and division by the std (so that one lr fits every dataset)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: Tensor) -> Tensor:
        return x.sub(self.mean).div_(self.std)  # (x - mean) / std, with one new tensor rather than two


class Compose:
    def __init__(self, *steps) -> None:
        self.steps = steps

    def __call__(self, x: Tensor) -> Tensor:
        for step in self.steps:
            x = step(x)
        return x


def paper_train_transform(size: int, mean, std, *, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                          color_jitter: float = 0.4, lighting: float = 0.1):
    """Paper section 6: scale/aspect crops, random interpolation, mirroring, photometric distortions after Howard
    (arXiv 1312.5402): brightness, contrast and saturation factors in [1 - color_jitter, 1 + color_jitter] in random
    order (torchvision ColorJitter), then AlexNet PCA lighting noise; then mean subtraction."""
    steps = [PaperCrop(size, scale, ratio), RandomFlip()]
    if color_jitter > 0:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    steps += [Lighting(lighting), Normalize(mean, std)]
    return Compose(*steps)


def eval_transform(size: int, resize_size: Optional[int], mean, std, *, interpolation: str = "bilinear",
                   normalize: bool = True):
    """Resize the shorter side to ``resize_size``, centre crop ``size`` (the preprocessing saved with the weights)."""
    resize_size = resize_size or round(size * 256 / 224)

    def view(img: Tensor) -> Tensor:
        h, w = img.shape[-2:]
        scale = resize_size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        if nh * nw > MAX_PIXELS:  # a 1 x 3,000,000 strip would become 256 x 768,000,000 pixels
            raise BadImage(f"aspect ratio too extreme: {w}x{h} resized to shorter side {resize_size} would be "
                           f"{nw}x{nh} pixels")
        x = resize(img.float().div_(255), (nh, nw), interpolation).clamp_(0, 1)
        top, left = (nh - size) // 2, (nw - size) // 2
        return x[:, top:top + size, left:left + size]

    return Compose(view, Normalize(mean, std)) if normalize else view


def array_batch(images: Tensor, size: int, mean: float, std: float, *, flip: bool = False) -> Tensor:
    """A batch of N x H x W uint8 grayscale images (the embedded Fashion-MNIST) -> N x 3 x size x size normalised.

    Upsampling the whole batch at once (bilinear) is cheap next to the network, so no worker processes are needed.
    Grayscale is replicated to 3 channels, as the network takes RGB.
    """
    x = images.unsqueeze(1).float().div_(255)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    if flip:
        mask = torch.rand(len(x)) < 0.5
        x = torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)
    x = (x - mean) / std
    return x.expand(-1, 3, -1, -1).contiguous()


def model_input(crops: Tensor, pre: dict) -> Tensor:
    """uint8 RGB crops (N x 3 x S x S) -> the tensor a model was trained on, as its weights' preprocessing says.

    The one place that applies, in order: grey conversion (``grayscale``: luminance replicated to 3 channels, for
    models trained on grey images), the pixel scale (``pixel_range`` 1: 0..1 as torchvision; 255: 0..255 as
    Caffe), the channel order (``channel_order`` "BGR": Caffe's), then mean and std, which are given in the model's
    own channel order and pixel scale (BVLC: mean 104, 117, 123 in BGR, std 1). Each step is applied exactly once.
    """
    return _to_model(crops.float(), pre, scale=255)


def unit_model_input(x: Tensor, pre: dict) -> Tensor:
    """``model_input`` for RGB pixels already in 0..1 (float, ... x 3 x H x W): what the training transforms make
    after their crops and photometric distortions, which work in that range."""
    return _to_model(x, pre, scale=1)


def _to_model(x: Tensor, pre: dict, *, scale: int) -> Tensor:
    """x: RGB float pixels in 0..scale -> the model's input (see ``model_input``); never changes ``x`` itself."""
    if pre.get("grayscale", False):
        x = v2.functional.rgb_to_grayscale(x, num_output_channels=3)
    if pre.get("pixel_range", 1) != scale:
        x = x / 255 if scale == 255 else x * 255
    if pre.get("channel_order", "RGB") == "BGR":
        x = x.flip(-3)
    mean = torch.tensor(pre.get("mean", (0.0, 0.0, 0.0)), dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(pre.get("std", (1.0, 1.0, 1.0)), dtype=x.dtype).view(-1, 1, 1)
    return (x - mean) / std


class ModelNormalize:
    """The last training transform step: 0..1 RGB pixels -> the model's input under the preprocessing ``pre``
    (``unit_model_input``). With RGB, pixel_range 1 and no grey it is Normalize(mean, std)."""

    def __init__(self, pre: dict) -> None:
        self.pre = dict(pre)

    def __call__(self, x: Tensor) -> Tensor:
        return unit_model_input(x, self.pre)

    def as_normalize(self) -> Optional[Normalize]:
        """This step as a plain ``Normalize`` when it is one, else None; made once (a data worker asks per image)."""
        if not hasattr(self, "_normalize"):
            mean, std = self.pre.get("mean", (0.0, 0.0, 0.0)), self.pre.get("std", (1.0, 1.0, 1.0))
            plain = not (self.pre.get("grayscale", False) or self.pre.get("pixel_range", 1) != 1
                         or self.pre.get("channel_order", "RGB") != "RGB" or len(mean) != 3 or len(std) != 3)
            self._normalize = Normalize(mean, std) if plain else None
        return self._normalize
