"""Pooled features of one layer: the model up to that layer, its output averaged over height and width.

``PooledFeatures(model, layer)`` is an ``nn.Module`` returning N x C; it goes through the shared inference path
(``googlenet.inference.optimize_for_inference``: BatchNorm folded, channels_last, fp32 or bf16) like every other
command, and its input is made by ``googlenet.data.transforms.model_input`` from the weights' own preprocessing.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..interpret.common import StopForward, resolve_layer

# The 1024-d features before the classifier: global average pooling after inception5b, before dropout and fc.
DEFAULT_LAYER = "avgpool"


def check_layer(model: nn.Module, layer: Optional[str]) -> str:
    """The layer name to pool (``avgpool`` when None); an unknown one is a one-line UserError naming valid ones."""
    layer = layer or DEFAULT_LAYER
    if layer != DEFAULT_LAYER:
        resolve_layer(model, layer)  # the names `googlenet layers` lists
    return layer


class PooledFeatures(nn.Module):
    """``model``'s ``layer`` output, globally average-pooled: N x 3 x H x W model input -> N x C float32.

    A forward hook takes the layer's output and stops the forward pass there (the layers after it are not run).
    The hook is added and removed on every call rather than in __init__, so that the deep copy the inference path
    makes (to fold BatchNorm) carries no hook of the original.
    """

    def __init__(self, model: nn.Module, layer: str) -> None:
        super().__init__()
        self.net = model  # not "module": unwrap_model would take that for a DDP wrapper
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        captured: list[Tensor] = []

        def hook(module, inputs, output) -> None:
            captured.append(output)
            raise StopForward

        handle = self.net.get_submodule(self.layer).register_forward_hook(hook)
        try:
            self.net.forward_features(x)
        except StopForward:
            pass
        finally:
            handle.remove()
        out = captured[0]
        if out.dim() == 4:  # N x C x H x W -> N x C, in fp32 whatever the precision
            out = out.float().mean(dim=(2, 3))
        return out.float().flatten(1)


def feature_predictor(model: nn.Module, layer: str, *, precision: str = "fp32",
                      device: torch.device = torch.device("cpu")) -> Callable[[Tensor], Tensor]:
    """``predictor(model input) -> N x C`` features on ``device``, through the shared inference path (eager
    PyTorch: the hook that stops the forward pass is not something ONNX export or Inductor can follow)."""
    from ..inference import optimize_for_inference

    if precision not in ("fp32", "bf16"):
        raise UserError(f"--precision for embed must be fp32 or bf16, got {precision!r}")
    # The inference path works on its own (folded, eval-mode) copy: the caller's model is neither moved nor
    # switched to eval mode; the copy goes to the device.
    predictor = optimize_for_inference(PooledFeatures(model, layer), precision=precision, backend="eager",
                                       channels_last=True)
    predictor.model.to(device)
    return predictor
