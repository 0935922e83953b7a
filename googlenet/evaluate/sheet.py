"""A contact sheet of an image's test-time crops, so the protocol can be seen rather than described.

Layout: one tile per crop, in ``crop_boxes`` order, ``COLUMNS[scheme]`` tiles per row; for "144" each row is one
(scale, square) pair (12 rows) holding its 6 crops then their 6 mirrors. Each tile is the crop (scaled to ``tile``
pixels) above a two-line label "scale square / crop mirror".
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from PIL import Image, ImageDraw, ImageFont

from ..errors import UserError
from ..fileio import atomic_path
from .crops import interpolation_mode, labelled_crops, make_crops

COLUMNS = {"1": 1, "10": 5, "144": 12}
GAP = 4  # pixels between tiles and around the sheet
LABEL = 28  # pixels under each tile for its two-line label


def contact_sheet(image: torch.Tensor, scheme: str, *, crop_size: int = 224, resize_size: Optional[int] = None,
                  tile: int = 112, interpolation: str = "bilinear") -> Image.Image:
    """The sheet of the crops of a 3 x H x W uint8 image, made by the same code that feeds the network."""
    height, width = image.shape[-2:]
    crops, labels = zip(*labelled_crops(width, height, scheme, crop_size=crop_size, resize_size=resize_size))
    pixels = make_crops(image, crops, interpolation=interpolation_mode(interpolation))
    cols = COLUMNS[scheme]
    rows = int(scheme) // cols
    sheet = Image.new("RGB", (cols * tile + (cols + 1) * GAP, rows * (tile + LABEL) + (rows + 1) * GAP),
                      (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    try:
        font = ImageFont.load_default(size=11)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    for i, (patch, label) in enumerate(zip(pixels, labels)):
        x = GAP + (i % cols) * (tile + GAP)
        y = GAP + (i // cols) * (tile + LABEL + GAP)
        thumb = Image.fromarray(patch.permute(1, 2, 0).numpy())
        if thumb.size != (tile, tile):
            thumb = thumb.resize((tile, tile), Image.Resampling.BILINEAR)
        sheet.paste(thumb, (x, y))
        draw.multiline_text((x, y + tile + 1), label, fill=(0, 0, 0), font=font, spacing=1)
    return sheet


def save_sheet(sheet: Image.Image, out: str | os.PathLike) -> None:
    """Writes the sheet atomically, in the format the file name says (.png, .jpg, .webp, ...)."""
    fmt = Image.registered_extensions().get(os.path.splitext(str(out))[1].lower())
    if fmt is None or fmt not in Image.SAVE:
        raise UserError(f"cannot tell an image format from the name {os.fspath(out)!r}; use .png or .jpg")
    with atomic_path(out) as tmp:
        sheet.save(tmp, format=fmt)
