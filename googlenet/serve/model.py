"""The served model: image bytes -> crops -> class probabilities through the one inference path of predict/eval.

Uploads are decoded from their bytes only: the format is told by its magic number and must be on ``ALLOWED``
(never by the client's file name or Content-Type), the pixel count is bounded from the header before any pixel is
decoded (decompression bombs), and nothing is written to disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..data.images import JPEG_MAGIC, BadImage, decode_image_bytes
from ..evaluate.crops import labelled_crops
from ..evaluate.ensemble import Ensemble
from ..evaluate.predict import class_names

# Magic numbers of the formats a server accepts; anything else is refused before Pillow sees it (Pillow would open
# dozens of rarer formats, each a parser exposed to the network). Written by hand: a table is all it takes.
ALLOWED = ((JPEG_MAGIC, "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
           (b"BM", "BMP"))
SERVE_MAX_PIXELS = 40_000_000  # 40 megapixels: above any phone photo, far below a decompression bomb
# The longer side over the shorter: the eval view resizes the shorter side to ~1.14x the crop, so a 1 x 16,000 strip
# (a 142-byte PNG) would become a 73 x 1,168,000 float image (hundreds of MB). 20:1 is past any panorama.
SERVE_MAX_ASPECT = 20


def sniff_format(data: bytes) -> Optional[str]:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":  # no magic of ALLOWED starts with RIFF
        return "WEBP"
    return next((name for magic, name in ALLOWED if data.startswith(magic)), None)


class RequestError(Exception):
    """A client's mistake: ``status`` (4xx) and a one-line message for ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Prepared:
    """One image ready for the batcher: its crops (n_crops x 3 x S x S uint8) and how they were cut."""

    crops: Tensor
    width: int
    height: int


class ServedModel:
    """A weights file loaded once, with the fast predictor its precision and backend select."""

    def __init__(self, model: torch.nn.Module, *, name: str, precision: str = "fp32", backend: str = "eager",
                 scheme: str = "1", max_pixels: int = SERVE_MAX_PIXELS) -> None:
        self.name, self.scheme, self.max_pixels = name, scheme, max_pixels
        self.precision, self.backend = precision, backend
        self.ensemble = Ensemble([model], precision=precision, backend=backend, names=[name])
        self.view = self.ensemble.views(scheme)[0]
        self.labels = class_names(self.ensemble)
        self.num_classes = self.ensemble.num_classes
        self.input_size = self.view.crop_size

    # -- images ------------------------------------------------------------------------------------------------
    def prepare(self, data: bytes) -> Prepared:
        """Decodes an upload into this model's crops; a RequestError (400/413/415) says what is wrong with it."""
        if not data:
            raise RequestError(400, "empty body: send the image bytes")
        fmt = sniff_format(data)
        if fmt is None:
            raise RequestError(415, "not an accepted image: send JPEG, PNG, GIF, BMP or WebP bytes")
        try:
            image = decode_image_bytes(data, max_pixels=self.max_pixels)
            h, w = image.shape[-2:]
            if max(h, w) > SERVE_MAX_ASPECT * min(h, w):
                raise RequestError(400, f"bad {fmt} image: aspect ratio too extreme ({w}x{h}); the server takes up "
                                        f"to {SERVE_MAX_ASPECT}:1")
            crops = self.view.crops(image)
        except BadImage as e:
            status = 413 if str(e).startswith("image too large") else 400
            raise RequestError(status, f"bad {fmt} image: {e}") from None
        return Prepared(crops, int(image.shape[-1]), int(image.shape[-2]))

    def crops_used(self, prepared: Prepared) -> list[dict]:
        """The crops cut from an image, as boxes in the coordinates of the image resized to each crop's scale."""
        crops = labelled_crops(prepared.width, prepared.height, self.scheme, crop_size=self.view.crop_size,
                               resize_size=self.view.resize_size)
        return [{"scale": c.scale, "box": list(c.box), "size": c.size, "flip": bool(c.flip), "label": n}
                for c, n in crops]

    # -- inference (called by the batcher's worker thread, never on the event loop) ---------------------------
    def probs_for_images(self, batch: list[Prepared]) -> Tensor:
        """Crop-averaged softmax per image: len(batch) x classes (the same computation as ``predict``)."""
        items = [(i, -1, {self.view: p.crops}) for i, p in enumerate(batch)]
        per_batch = max(1, len(batch)) * batch[0].crops.shape[0]
        return self.ensemble.probs(items, self.scheme, per_batch)[0]

    def probs_for_tensor(self, x: Tensor) -> Tensor:
        """Softmax of already-preprocessed input (N x 3 x S x S float32, the weights' normalisation applied)."""
        return torch.softmax(self.ensemble.predictors[0](x).float(), dim=1)

    def topk(self, probs: Tensor, k: int) -> list[list[dict]]:
        k = max(1, min(int(k), self.num_classes))
        top = torch.topk(probs, k, dim=1)
        return [[{"label": self.labels[c], "index": c, "prob": p} for c, p in zip(idx, val)]
                for idx, val in zip(top.indices.tolist(), top.values.tolist())]

    def warm_up(self) -> None:
        """One batch through the predictor so the first request pays no session build / first-call cost. int8
        calibrates on its first batch, so it is not warmed with a blank image."""
        if self.precision == "int8":
            return
        self.probs_for_tensor(torch.zeros(1, 3, self.input_size, self.input_size))
