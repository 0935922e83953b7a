"""The fast inference path for a loaded model: ``optimize_for_inference(model, precision=..., backend=...)``.

Returns a callable ``predictor(images) -> fp32 logits`` (images: N x 3 x H x W float, already normalised) that
predict, eval, export checks and the benchmark all use. This first version covers eager fp32 / bf16 with
channels_last; the benchmark work extends it (BatchNorm folding, compile, ONNX Runtime, int8).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .errors import UserError

PRECISIONS = ("fp32", "bf16")
BACKENDS = ("eager",)


def optimize_for_inference(model: nn.Module, *, precision: str = "fp32", backend: str = "eager",
                           channels_last: bool = True) -> Callable[[Tensor], Tensor]:
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if backend not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    model = model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if precision == "bf16" else None

    @torch.inference_mode()
    def predictor(images: Tensor) -> Tensor:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None):
            return model(images).float()

    predictor.model = model  # type: ignore[attr-defined]
    return predictor
