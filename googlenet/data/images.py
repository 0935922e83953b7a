"""Decoding any image a user may hand us into an RGB uint8 tensor, or a clear ``BadImage``.

JPEGs go through ``torchvision.io.decode_jpeg`` (libjpeg-turbo, faster than PIL); everything else, and every JPEG
torchvision refuses (CMYK, progressive oddities), goes through Pillow. Odd files are converted rather than dropped:
grayscale, CMYK, palette, RGBA / LA (composited over white), 16-bit, animated (first frame), EXIF-rotated. A file
larger than ``max_pixels`` is refused from its header alone, before any pixel is decoded (decompression bombs).
Files are read through ``googlenet.fileio.read_image_file``: regular files only, at most GOOGLENET_MAX_IMAGE_BYTES.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import one_line
from ..fileio import PIXELS_ENV, Unreadable, byte_limit, read_image_file

# Pillow's own default bound (about 89.5 megapixels, a 9459x9459 image); raise with GOOGLENET_MAX_PIXELS.
MAX_PIXELS = byte_limit(PIXELS_ENV, 89_478_485, strict=False)
JPEG_MAGIC = b"\xff\xd8\xff"

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is reported, never half-decoded silently


class BadImage(Exception):
    """A file that cannot be turned into an image: the message says why, in one line."""


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Reads ``path`` as a 3 x H x W uint8 RGB tensor, EXIF orientation applied.

    Raises ``BadImage`` for a missing, empty, truncated, oversized or non-image file, and for anything that is not a
    regular file (a device, FIFO, socket, folder, dangling link): those are refused before a byte is read.
    """
    try:
        data = read_image_file(path)  # regular files only, at most GOOGLENET_MAX_IMAGE_BYTES
    except Unreadable as e:
        raise BadImage(str(e)) from None
    return decode_image_bytes(data)


def decode_image_bytes(data: bytes, *, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own bound applies below
            img = Image.open(io.BytesIO(data))  # reads the header only
            w, h = img.size
    except Image.DecompressionBombError as e:
        raise BadImage(f"image too large ({one_line(e, 200)})") from None
    except UnidentifiedImageError:
        raise BadImage("not an image (unrecognised format)") from None
    except Exception as e:  # SyntaxError from broken headers, ...
        raise BadImage(f"not an image ({one_line(e, 200)})") from None
    if w < 1 or h < 1:
        raise BadImage(f"image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise BadImage(f"image too large: {w}x{h} = {w * h:,} pixels, limit {max_pixels:,} "
                       f"(set GOOGLENET_MAX_PIXELS to raise it)")

    if data[:3] == JPEG_MAGIC and img.mode in ("RGB", "L"):
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # libjpeg warnings (premature end of data) -> let Pillow decide
                # torchvision 0.29 deprecates its decoders (one warning per call); they stay the fastest here, and
                # Pillow takes over when they are gone.
                warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities of TorchVision")
                buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                return decode_jpeg(buf, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        except Exception:
            pass  # Pillow decides, below
    try:
        img.load()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data": the pixels are fine, the orientation is then kept
            img = ImageOps.exif_transpose(img)
        return pil_to_tensor_rgb(img)
    except Exception as e:  # OSError("image file is truncated"), ValueError, ...
        raise BadImage(f"cannot decode ({one_line(e, 200)})") from None


def pil_to_tensor_rgb(img: Image.Image) -> torch.Tensor:
    """Any Pillow mode -> 3 x H x W uint8 RGB. Alpha is composited over white; 16/32-bit values are rescaled."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)  # uint8 2-D -> mode L
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
