"""The fast training data path for image folders: decode only what the random crop needs.

torchvision's ImageFolder recipe decodes the whole JPEG with PIL, then RandomResizedCrop throws most of it away
(the paper's crops cover 8%..100% of the image) and shrinks the rest to 224x224. Here the crop is drawn first, from
the JPEG header alone, with torchvision's own sampler and the same random draws, so the distribution of crops and
flips is torchvision's. Then:

* when the crop is at least 2x larger than the output on both sides, libjpeg decodes at 1/2, 1/4 or 1/8 scale
  (DCT scaling, Pillow's ``draft``): 4-64x fewer pixels to decode and to resize;
* otherwise ``torchvision.io.decode_jpeg`` (libjpeg-turbo, no PIL image object);
* crop, antialiased bilinear resize (torch's uint8 SIMD kernel), flip and normalise on uint8 / one float pass.

Any file that is not a plain RGB / grayscale JPEG without EXIF rotation (PNG, CMYK, rotated photos...) goes
through ``googlenet.data.images.decode_image_bytes`` (``load_image``'s decoder), which handles every odd case,
and then the same crop.

Wiring into training: ``ImageFolderDataset(samples, load=train_transform(size, mean, std))`` replaces
``ImageFolderDataset(samples, paper-style transform)``: same items (``(image, label)`` or ``Skipped``), usable with
``collate_skipping``.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..fileio import Unreadable, read_image_file
from .images import JPEG_MAGIC, MAX_PIXELS, BadImage, decode_image_bytes
from .transforms import INTERPOLATIONS, Lighting, Normalize

_EXIF_ORIENTATION = 0x0112


class FastRandomResizedCrop:
    """``path -> normalised float 3 x size x size``: RandomResizedCrop(size, scale, ratio) + horizontal flip +
    Normalize(mean, std), decoding JPEGs at the smallest DCT scale that still covers the crop.

    Randomness: torch's global generator, drawn in torchvision's order (crop params, then the flip), so a seeded
    run draws the same crops and flips as ``torchvision.transforms`` would on the same image sizes.
    normalize=False returns the uint8 crop (3 x size x size) to normalise later on the batch (e.g. on a GPU).
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], *, scale=(0.08, 1.0),
                 ratio=(3 / 4, 4 / 3), flip: bool = True, normalize: bool = True) -> None:
        self.size, self.flip, self.normalize = int(size), flip, normalize
        self.scale, self.ratio = [float(s) for s in scale], [float(r) for r in ratio]
        # Normalize(mean, std) applied to x / 255 equals (x - 255 mean) / (255 std): one pass over uint8 input.
        self.shift = torch.tensor([255.0 * m for m in mean]).view(3, 1, 1)
        self.inv_scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(3, 1, 1)

    def __call__(self, path: str | os.PathLike) -> Tensor:
        try:
            data = read_image_file(path)  # the same rules as load_image: regular files only, bounded
        except Unreadable as e:
            raise BadImage(str(e)) from None
        return self.from_bytes(data)

    def from_bytes(self, data: bytes) -> Tensor:
        """The same crop from an encoded image already in memory (a WebDataset shard's sample)."""
        jpeg = self._plain_jpeg(data) if data[:3] == JPEG_MAGIC else None
        if jpeg is not None:
            width, height = jpeg.size
            params = self._params(height, width)
            crop = self._decode_crop(data, height, width, params, opened=jpeg)
            if crop is not None:
                return self._finish(crop)
        # Not a plain JPEG (or libjpeg complained): the careful loader, then the same crop.
        img = decode_image_bytes(data)  # the bytes already read: no second open
        if jpeg is None or tuple(img.shape[-2:]) != (height, width):
            params = self._params(img.shape[-2], img.shape[-1])
        top, left, h, w = params
        return self._finish(self._resize(img[:, top:top + h, left:left + w]))

    def _params(self, height: int, width: int) -> tuple[int, int, int, int]:
        # torchvision's sampler only reads the size: an empty 1 x H x W view stands in for the image.
        dummy = torch.empty(1, 1, 1).expand(1, height, width)
        return v2.RandomResizedCrop.get_params(dummy, self.scale, self.ratio)

    def _plain_jpeg(self, data: bytes) -> Optional[Image.Image]:
        """An RGB / grayscale JPEG without EXIF rotation, opened (its header read, nothing decoded); else None."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
                width, height = img.size
                if (img.format != "JPEG" or img.mode not in ("RGB", "L") or width * height > MAX_PIXELS
                        or img.getexif().get(_EXIF_ORIENTATION, 1) != 1):
                    return None
        except Exception:
            return None
        return img

    def _decode_crop(self, data: bytes, height: int, width: int, params,
                     opened: Optional[Image.Image] = None) -> Optional[Tensor]:
        """The resized uint8 crop ``params`` = (top, left, h, w) of a plain JPEG, or None when libjpeg complains.
        opened: the same file already opened by ``_plain_jpeg`` (not yet decoded), saving a second header parse."""
        top, left, h, w = params
        factor = 1
        while factor < 8 and w >= 2 * factor * self.size and h >= 2 * factor * self.size:
            factor *= 2
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # libjpeg warnings (truncated data) -> the careful loader
                # torchvision 0.29 deprecates its decoders in favour of TorchCodec; they still work.
                warnings.simplefilter("ignore", DeprecationWarning)
                # torch warns (once a process) that Pillow's array is read-only; nothing writes to it. As an error,
                # it sent each worker's first DCT-scaled decode to the careful loader.
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                if factor > 1:
                    img = opened if opened is not None else Image.open(io.BytesIO(data))
                    img.draft("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
                    img.load()
                    if img.mode != "RGB":
                        img = img.convert("RGB")
                    full = torch.from_numpy(np.asarray(img)).permute(2, 0, 1)  # 3 x H' x W', channels-last
                    sy, sx = img.size[1] / height, img.size[0] / width  # the scale libjpeg actually used
                    top, left = int(top * sy), int(left * sx)
                    h, w = max(1, round(h * sy)), max(1, round(w * sx))
                else:
                    from torchvision.io import ImageReadMode, decode_jpeg

                    full = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except Exception:
            return None
        return self._resize(full[:, top:top + h, left:left + w])

    def _resize(self, crop: Tensor) -> Tensor:
        # torch's uint8 antialiased kernel is fastest on channels-last memory (2x here); the output is made
        # contiguous again before normalising, which is 3x faster on contiguous input.
        crop = crop.permute(1, 2, 0).contiguous().permute(2, 0, 1)  # 3 x h x w view of h x w x 3 memory
        return TF.resize(crop, [self.size, self.size], interpolation=v2.InterpolationMode.BILINEAR, antialias=True)

    def _finish(self, crop: Tensor) -> Tensor:
        if self.flip and torch.rand(1) < 0.5:  # RandomHorizontalFlip's draw, after the crop's
            crop = crop.flip(-1)
        crop = crop.contiguous()
        return crop.float().sub_(self.shift).mul_(self.inv_scale) if self.normalize else crop


def train_transform(size: int = 224, mean: Sequence[float] = (0.485, 0.456, 0.406),
                    std: Sequence[float] = (0.229, 0.224, 0.225), *, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                    flip: bool = True, normalize: bool = True) -> FastRandomResizedCrop:
    """The fast equivalent of torchvision's RandomResizedCrop + RandomHorizontalFlip + ToTensor + Normalize,
    taking a file path (not a decoded image)."""
    return FastRandomResizedCrop(size, mean, std, scale=scale, ratio=ratio, flip=flip, normalize=normalize)


class FastPaperCrop(FastRandomResizedCrop):
    """The paper recipe (``transforms.paper_train_transform``) on the fast decoder: the same crop sampler, an
    interpolation drawn from ``INTERPOLATIONS`` after the crop (PaperCrop's order), the flip, then ColorJitter,
    PCA lighting and Normalize: the very same objects make the draws, and two C kernels do the arithmetic (the
    resize: resample.py; the photometric distortions: photometric.py), equal to PyTorch's to float rounding. The
    decode differs too (DCT-scaled for large crops, as in FastRandomResizedCrop)."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], *, scale=(0.08, 1.0),
                 ratio=(3 / 4, 4 / 3), color_jitter: float = 0.4, lighting: float = 0.1,
                 to_model: Optional[Callable[[Tensor], Tensor]] = None) -> None:
        super().__init__(size, mean, std, scale=scale, ratio=ratio, flip=True, normalize=False)
        self.jitter = (v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter)
                       if color_jitter > 0 else None)
        self.lighting = Lighting(lighting)
        # to_model: the weights' whole preprocessing (``transforms.ModelNormalize``: grey, pixel scale, channel
        # order, mean/std) in place of the plain Normalize, for fine-tuning from Caffe-style weights.
        self.norm = to_model or Normalize(mean, std)

    def _resize(self, crop: Tensor) -> Tensor:
        from .resample import resize_u8

        mode = INTERPOLATIONS[int(torch.randint(len(INTERPOLATIONS), ()))]  # PaperCrop's draw, after the crop's
        # PaperCrop's float resize (uint8 / 255, resize, clamp to [0, 1]) in one C pass over the uint8 crop.
        return resize_u8(crop, (self.size, self.size), mode)

    def _finish(self, crop: Tensor) -> Tensor:
        from .photometric import distort_

        x = super()._finish(crop)  # flip; float [0, 1] from _resize, a tensor of our own
        return distort_(x, self.jitter, self.lighting, self.norm)  # norm(lighting(jitter(x))) in one C kernel
