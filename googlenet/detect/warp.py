"""R-CNN's region warp: each proposal dilated for context, warped anisotropically to the network's input square.

Girshick et al. 2014 (appendix A, "warp with context padding p = 16"): the box is enlarged so that, once warped to
the network's input size S, there are p pixels of the original image around the original box on every side; the
enlarged box is then scaled to S x S regardless of its aspect ratio; where it leaves the image, the image mean fills
in (which is zero once the image is normalised, so the fill is free).

The warp itself is torchvision's ``roi_align`` (aligned=True, one bilinear sample per output pixel): every output
pixel samples the image at its centre's position inside the box, which is what a bilinear resize of the crop does.
roi_align reads 0 beyond one pixel outside the image (and the edge within it), so the normalised image gives the
mean fill R-CNN pastes.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import roi_align


def context_boxes(boxes: np.ndarray | torch.Tensor, size: int, context: int) -> torch.Tensor:
    """The boxes dilated so that ``context`` pixels of surround show at the warped size ``size``: the box fills
    the central size - 2*context pixels, so each side grows by context / (size - 2*context) of its length."""
    b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if not 0 <= 2 * context < size:
        raise ValueError(f"context {context} px leaves nothing of a {size} px warp")
    scale = context / (size - 2 * context)
    w, h = (b[:, 2] - b[:, 0]), (b[:, 3] - b[:, 1])
    return torch.stack([b[:, 0] - scale * w, b[:, 1] - scale * h, b[:, 2] + scale * w, b[:, 3] + scale * h], 1)


def warp_regions(image: torch.Tensor, boxes: np.ndarray | torch.Tensor, size: int, context: int) -> torch.Tensor:
    """(N, C, size, size) warps of ``image`` (C, H, W, already normalised: mean 0) at ``boxes`` (N, 4 xyxy)."""
    rois = context_boxes(boxes, size, context)
    rois = torch.cat([torch.zeros(len(rois), 1), rois], 1).to(image.dtype)
    return roi_align(image[None], rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=1, aligned=True)
