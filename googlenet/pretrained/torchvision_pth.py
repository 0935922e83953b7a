"""torchvision's GoogLeNet checkpoints -> the project's weights file (arch ``googlenet_tv``).

``googlenet_tv`` has torchvision's module names, so a torchvision state dict loads as is; what the checkpoint does
not carry (``transform_input``, class names, preprocessing) is filled in the way torchvision's builder does for its
``GoogLeNet_Weights.IMAGENET1K_V1`` weights: ``transform_input=True``, ImageNet-1k categories, resize 256 bilinear,
centre crop 224, ImageNet mean/std.

Safety: a ``.pth`` is a pickle, and unpickling can run code. Checkpoints are read with
``torch.load(weights_only=True)`` only, which refuses anything but tensors and plain containers before it builds
them; torchvision's own ``get_state_dict`` loads with ``weights_only=False``, so it is not used here (its URL,
hash and metadata are).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..errors import UserError, one_line
from ..fileio import open_weights_file
from ..models import create_model
from ..weights import load_model, load_state_dict_checked, save_model, tensor_problem
from .fetch import NETWORK_TIMEOUT_S, cached_pretrained, save_converted

ARCH = "googlenet_tv"
WRAPPER_KEYS = ("state_dict", "model")  # training scripts often save {"state_dict": ..., "epoch": ...}


def _tv_weights():
    from torchvision.models import GoogLeNet_Weights

    return GoogLeNet_Weights.IMAGENET1K_V1


def torchvision_preprocessing() -> dict:
    """The preprocessing torchvision declares for its GoogLeNet weights, in our metadata's terms."""
    t = _tv_weights().transforms()  # ImageClassification(crop 224, resize 256, bilinear, ImageNet mean/std)
    return {"input_size": int(t.crop_size[0]), "resize_size": int(t.resize_size[0]),
            "interpolation": t.interpolation.value, "mean": list(t.mean), "std": list(t.std)}


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A torchvision-style state dict from ``path``, loaded without running any code in it.

    Accepts a bare state dict or one wrapped in {"state_dict": ...} / {"model": ...}, with or without DDP's
    "module." prefix. Raises a one-line UserError for anything else.
    """
    path = Path(path)
    try:
        # A regular file within GOOGLENET_MAX_WEIGHTS_BYTES, read through the descriptor that was checked.
        with open_weights_file(path, "checkpoint") as (f, _), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "pickle protocol 4" notices from the weights-only unpickler
            state = torch.load(f, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as e:
        text = str(e)
        if "Weights only load failed" in text:
            found = re.search(r"Unsupported (?:global: GLOBAL|operand) \S+", text)
            what = f" ({' '.join(found.group(0).split())})" if found else ""
            raise UserError(f"{path} is not a plain state dict: it holds code or objects that torch.load("
                            f"weights_only=True) refuses{what}; nothing in it was run") from None
        raise UserError(f"{path} is not a readable PyTorch checkpoint: {one_line(e)}") from None
    for _ in range(2):  # {"model": {"state_dict": ...}} occurs too
        if isinstance(state, dict):
            state = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), dict)), state)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    for k, v in state.items():
        problem = tensor_problem(v)
        if problem is not None:
            raise UserError(f"{path}: tensor {str(k)[:80]} {problem}")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def from_torchvision_state_dict(state: dict[str, torch.Tensor], *, source: str = "state dict",
                                aux_logits: Optional[bool] = None) -> nn.Module:
    """Builds ``googlenet_tv`` (transform_input on) from a state dict of torchvision's GoogLeNet, in eval mode.

    aux_logits: None keeps the aux heads when the state dict has them; False drops them (as torchvision's builder
    does by default: the aux heads of the published weights are untrained).
    """
    if "fc.weight" not in state or state["fc.weight"].ndim != 2 or "conv1.conv.weight" not in state:
        raise UserError(f"{source} is not a torchvision GoogLeNet state dict (no conv1.conv.weight / fc.weight)")
    if state["fc.weight"].shape[1] != 1024 or state["fc.weight"].shape[0] < 1:  # before a model is built to it
        raise UserError(f"{source}: fc.weight has shape {list(state['fc.weight'].shape)}, expected [classes, 1024]")
    has_aux = any(k.startswith(("aux1.", "aux2.")) for k in state)
    keep_aux = has_aux if aux_logits is None else (aux_logits and has_aux)
    if aux_logits and not has_aux:
        raise UserError(f"{source} has no aux heads to keep")
    if not keep_aux:
        state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}
    num_classes = int(state["fc.weight"].shape[0])
    model = create_model(ARCH, num_classes=num_classes, aux_logits=keep_aux, transform_input=True)
    load_state_dict_checked(model, state, source=source)
    from ..data.imagenet import imagenet_classes

    model.class_names = imagenet_classes() if num_classes == 1000 else None
    model.preprocessing = torchvision_preprocessing()
    return model.eval()


def convert_torchvision(src: str | os.PathLike, dst: str | os.PathLike, *,
                        aux_logits: Optional[bool] = None) -> nn.Module:
    """``googlenet convert --from torchvision SRC DST``: reads SRC (weights only), writes DST atomically, returns the
    model (eval mode) with the metadata read back from DST."""
    src = Path(src)
    model = from_torchvision_state_dict(read_checkpoint(src), source=str(src), aux_logits=aux_logits)
    return save_converted(model, src, dst, {"from": "torchvision"}, class_names=model.class_names,
                          preprocessing=model.preprocessing)


def load_torchvision_pretrained(*, timeout: float = NETWORK_TIMEOUT_S) -> nn.Module:
    """torchvision's ImageNet GoogLeNet (IMAGENET1K_V1) as ``googlenet_tv``, in eval mode, with metadata.

    Looks in torch.hub's cache (``$TORCH_HOME/hub/checkpoints``) first for our converted file, then for
    torchvision's .pth; downloads the .pth from torchvision's URL only when neither is there (offline: one line).
    The aux heads are dropped, as torchvision's builder drops them (they are untrained in those weights).
    """
    url = _tv_weights().url
    checkpoint_name = Path(url).name  # the file torchvision itself caches: googlenet-1378be20.pth
    sha_prefix = re.search(r"-([a-f0-9]+)\.", url).group(1)  # checked on download, as torchvision does

    def convert(checkpoint: Path, converted: Path) -> nn.Module:
        model = from_torchvision_state_dict(read_checkpoint(checkpoint), source=str(checkpoint), aux_logits=False)
        meta = {"class_names": model.class_names, "preprocessing": model.preprocessing,
                "source": {"from": "torchvision", "weights": "GoogLeNet_Weights.IMAGENET1K_V1",
                           "file": checkpoint.name}}
        try:
            save_model(model, converted, **meta)
            return load_model(converted, arch=ARCH)
        except (OSError, UserError):  # a read-only cache: use the model converted in memory
            model.metadata = {"arch": ARCH, "num_classes": model.num_classes, "aux_logits": False, **meta}
            return model

    return cached_pretrained(url=url, original=checkpoint_name, converted=f"{ARCH}-{sha_prefix}.safetensors",
                             arch=ARCH, convert=convert, what="torchvision's GoogLeNet weights",
                             help_line=f"on a connected machine download {url}, then run 'googlenet convert --from "
                                       f"torchvision {checkpoint_name} googlenet_tv.safetensors' and pass --weights "
                                       f"googlenet_tv.safetensors", hash_prefix=sha_prefix, timeout=timeout)


__all__ = ["convert_torchvision", "from_torchvision_state_dict", "load_torchvision_pretrained", "read_checkpoint",
           "torchvision_preprocessing"]
