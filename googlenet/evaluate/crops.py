"""The paper's test-time crops (section 7), as exact boxes, and the crops themselves cut with torchvision.

``crop_boxes(width, height, scheme)`` says where every crop of an image of that size comes from; ``make_crops``
cuts them out of a 3 x H x W uint8 image. Each crop is a ``Crop(scale, box, size, flip)``:

* ``scale``: the length the shorter side is resized to;
* ``box``:   (left, top, right, bottom) in the pixel coordinates of the image after that resize (right/bottom
  exclusive);
* ``size``:  the side of the square output (224);
* ``flip``:  mirrored left-right after cutting.

Schemes:

* ``"144"`` (the paper): shorter side 256, 288, 320 and 352; at each scale the left, centre and right squares of
  side ``scale`` (top, centre, bottom for a portrait image); per square the 4 corner crops, the centre crop and the
  whole square resized to ``size``; each also mirrored. 4 x 3 x 6 x 2 = 144. For a square image the three squares
  are the same square: its crops appear three times, so the count (and the cost) stays 144, as in the paper.
* ``"10"``: the usual AlexNet-style protocol the paper compares against: shorter side ``resize_size`` (256), the 4
  corner crops and the centre crop of the whole resized image, and their mirrors.
* ``"1"``: shorter side ``resize_size``, the centre crop (torchvision's ``Resize(256)`` + ``CenterCrop(224)``).

For another ``crop_size`` the scales are multiplied by ``crop_size / 224`` and rounded to the nearest integer
(e.g. 73, 82, 91, 101 for 64); ``resize_size`` defaults to ``round(crop_size * 256 / 224)``.

Rounding, chosen to equal torchvision's ``Resize(int)`` and ``CenterCrop`` exactly:
the longer side becomes ``floor(scale * long / short)``; a centred offset (centre square, centre crop) is
``round((outer - inner) / 2)`` with Python's round (halves to even).

Order: scale, then square, then mirror (all unmirrored crops of a square first), then crop (tl, tr, bl, br, centre,
whole), so that the 10-crop list is torchvision's ``TenCrop`` order and the 144 crops lay out as a 12 x 12 sheet.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..data.images import MAX_PIXELS, BadImage
from ..errors import UserError

SCHEMES = ("1", "10", "144")
PAPER_SCALES = (256, 288, 320, 352)  # paper section 7, for 224 crops
CORNERS = ("tl", "tr", "bl", "br", "centre")


class Crop(NamedTuple):
    scale: int
    box: tuple[int, int, int, int]
    size: int
    flip: bool


def check_scheme(scheme: str | int) -> str:
    scheme = str(scheme)
    if scheme not in SCHEMES:
        raise UserError(f"crop scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    return scheme


def default_resize(crop_size: int) -> int:
    return round(crop_size * 256 / 224)


def resized_size(width: int, height: int, scale: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to ``scale``: torchvision's rounding (floor)."""
    if width <= height:
        return scale, scale * height // width
    return scale * width // height, scale


def _five(left: int, top: int, w: int, h: int, c: int) -> list[tuple[int, int, int, int]]:
    """The 4 corner crops and the centre crop of side ``c`` of the region (left, top, w, h): torchvision's FiveCrop."""
    cl, ct = left + int(round((w - c) / 2.0)), top + int(round((h - c) / 2.0))
    corners = [(left, top), (left + w - c, top), (left, top + h - c), (left + w - c, top + h - c), (cl, ct)]
    return [(x, y, x + c, y + c) for x, y in corners]


def labelled_crops(width: int, height: int, scheme: str | int, *, crop_size: int = 224,
                   resize_size: Optional[int] = None) -> list[tuple[Crop, str]]:
    """``crop_boxes(...)`` with each crop's human-readable name (e.g. "288 left\\ntl mirror"), from one pass."""
    if width < 1 or height < 1:
        raise UserError(f"image size must be positive, got {width}x{height}")
    scheme = check_scheme(str(scheme))
    c = crop_size
    resize = default_resize(c) if resize_size is None else resize_size
    if resize < c:
        raise UserError(f"resize size {resize} is smaller than the crop size {c}")
    out: list[tuple[Crop, str]] = []
    if scheme == "1":  # the centre crop
        w, h = resized_size(width, height, resize)
        return [(Crop(resize, _five(0, 0, w, h, c)[4], c, False), f"{resize} centre")]
    if scheme == "10":  # the five crops and their mirrors
        w, h = resized_size(width, height, resize)
        return [(Crop(resize, box, c, flip), f"{resize} {name}" + (" mirror" if flip else ""))
                for flip in (False, True) for name, box in zip(CORNERS, _five(0, 0, w, h, c))]
    # "144": paper section 7.
    portrait = height > width
    square_names = ("top", "centre", "bottom") if portrait else ("left", "centre", "right")
    for s in (round(p * c / 224) for p in PAPER_SCALES):
        w, h = resized_size(width, height, s)
        long = h if portrait else w
        for sq_name, offset in zip(square_names, (0, int(round((long - s) / 2.0)), long - s)):
            sl, st = (0, offset) if portrait else (offset, 0)
            boxes = _five(sl, st, s, s, c) + [(sl, st, sl + s, st + s)]  # sixth crop: the whole square, resized to c
            out += [(Crop(s, box, c, flip), f"{s} {sq_name}\n{name}" + (" mirror" if flip else ""))
                    for flip in (False, True) for name, box in zip(CORNERS + ("whole",), boxes)]
    return out


def crop_boxes(width: int, height: int, scheme: str | int, *, crop_size: int = 224,
               resize_size: Optional[int] = None) -> list[Crop]:
    """The crops of a ``width`` x ``height`` image under ``scheme`` ("1", "10" or "144"); see the module doc."""
    return [crop for crop, _ in labelled_crops(width, height, scheme, crop_size=crop_size, resize_size=resize_size)]


def crop_labels(width: int, height: int, scheme: str | int, *, crop_size: int = 224,
                resize_size: Optional[int] = None) -> list[str]:
    """Human-readable names of ``crop_boxes(...)``, in the same order (e.g. "288 left\\ntl mirror")."""
    return [label for _, label in labelled_crops(width, height, scheme, crop_size=crop_size,
                                                 resize_size=resize_size)]


def make_crops(image: torch.Tensor, crops: list[Crop], *,
               interpolation: InterpolationMode = InterpolationMode.BILINEAR) -> torch.Tensor:
    """Cuts ``crops`` out of a 3 x H x W uint8 image: N x 3 x size x size uint8.

    Each scale is resized once (antialiased, as PIL does when shrinking); the whole-square crop is resized again.
    """
    resized: dict[int, torch.Tensor] = {}
    out = []
    height, width = image.shape[-2:]
    for crop in crops:
        if crop.scale not in resized:
            w, h = resized_size(width, height, crop.scale)
            if w * h > MAX_PIXELS:  # a 1 x 3,000,000 strip would become 64 x 192,000,000 pixels
                raise BadImage(f"aspect ratio too extreme: {width}x{height} resized to shorter side {crop.scale} "
                               f"would be {w}x{h} pixels")
            resized[crop.scale] = TF.resize(image, [h, w], interpolation=interpolation, antialias=True)
        left, top, right, bottom = crop.box
        patch = resized[crop.scale][..., top:bottom, left:right]
        if (right - left, bottom - top) != (crop.size, crop.size):
            patch = TF.resize(patch, [crop.size, crop.size], interpolation=interpolation, antialias=True)
        if crop.flip:
            patch = TF.horizontal_flip(patch)
        out.append(patch)
    return torch.stack(out)


def interpolation_mode(name: str) -> InterpolationMode:
    try:
        return InterpolationMode(name)
    except ValueError:
        raise UserError(f"unknown interpolation {name!r} in the weights' preprocessing") from None
