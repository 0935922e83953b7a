"""The project's weights file: safetensors tensors plus JSON metadata. Loading runs no pickle.

The metadata makes a file self-describing (architecture, options, class names, preprocessing), so evaluation,
prediction and export read what training wrote and cannot drift from it::

    {"format": "googlenet-weights", "version": 1, "arch": "googlenet", "num_classes": 10, "aux_logits": true,
     "options": {...}, "class_names": [...], "preprocessing": {...}, ...anything the caller adds}
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, BinaryIO, Optional

import torch
from torch import nn

from .errors import UserError, one_line
from .fileio import atomic_path, open_weights_file
from .models import GoogLeNet, arch_options, create_model, list_models, unwrap_model

FORMAT = "googlenet-weights"
VERSION = 1
METADATA_KEY = "googlenet"

# torchvision's preprocessing for its ImageNet weights (and the default for ImageNet-style training).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_PREPROCESSING = {"input_size": 224, "resize_size": 256, "interpolation": "bilinear",
                          "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def default_preprocessing(input_size: int = 224) -> dict:
    """ImageNet preprocessing scaled to ``input_size``: resize the shorter side to 256/224 of it, centre crop."""
    return {**IMAGENET_PREPROCESSING, "input_size": input_size, "resize_size": round(input_size * 256 / 224)}


def save_model(model: nn.Module, path: str | os.PathLike, **metadata: Any) -> Path:
    """Writes ``model``'s weights and metadata to ``path`` (safetensors), atomically.

    metadata: ``class_names`` (list of str), ``preprocessing`` (dict) and any JSON-serialisable extras.
    """
    from safetensors.torch import save_file

    model = unwrap_model(model)
    if not isinstance(model, GoogLeNet):
        raise ValueError(f"save_model takes the eager GoogLeNet module (got {type(model).__name__}); save before "
                         f"torch.jit.script, or use 'googlenet export --format torchscript'")
    arch = metadata.pop("arch", None) or getattr(model, "arch_name", None)
    if arch is None:
        raise ValueError("save_model needs arch=... for a model not made by create_model")
    num_classes = int(model.num_classes)
    class_names = metadata.pop("class_names", None) or getattr(model, "class_names", None)
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {num_classes} classes")
    if class_names is not None and len(set(class_names)) != len(class_names):
        raise ValueError("class names must be unique (a label must name one class)")
    base = dict(getattr(model, "metadata", {}) or {})
    meta = {**base, **metadata, "format": FORMAT, "version": VERSION, "arch": arch, "num_classes": num_classes,
            "aux_logits": bool(model.aux_logits), "options": arch_options(model),
            "class_names": list(class_names) if class_names is not None else None,
            "preprocessing": metadata.get("preprocessing") or base.get("preprocessing") or default_preprocessing()}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    return Path(path)


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a weights file, checked; raises UserError when the file is not one of ours."""
    with open_weights_file(path) as (f, name):
        return _read_metadata(f, name, Path(path))


# safetensors' own bound on the JSON header (its MAX_HEADER_SIZE).
SAFETENSORS_MAX_HEADER = 100_000_000


def safetensors_metadata(f: BinaryIO, name: str) -> dict:
    """The metadata ({} for none) of the open safetensors file ``f``, whose path is ``name``; a ValueError saying why
    for a file that cannot be a complete one, safetensors' own error for other faults.

    safetensors checks the layout when it opens the file; checking first gives a plain reason ("truncated: 1,024
    bytes, the header declares 26,735,124") and reads at most the header, which is bounded by the file size.
    """
    from safetensors import safe_open

    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    try:
        if len(head) < 8:
            raise ValueError(f"{size:,} bytes, too short for a safetensors header")
        n = int.from_bytes(head, "little")
        if n > min(size - 8, SAFETENSORS_MAX_HEADER):
            raise ValueError(f"its first 8 bytes declare a {n:,}-byte header, more than the file's {size:,} bytes")
        try:
            header = json.loads(f.read(n))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
            declared = 8 + n + max(ends, default=0)
        except Exception:
            declared = size  # not a layout question: safetensors names the fault
        if declared != size:
            raise ValueError(f"{'truncated' if declared > size else 'extra bytes'}: the file has {size:,} bytes, "
                             f"its header declares {declared:,}")
    finally:
        f.seek(0)
    with safe_open(name, framework="pt") as st:
        return st.metadata() or {}


def _read_metadata(f: BinaryIO, name: str, path: Path) -> dict:
    try:
        raw = safetensors_metadata(f, name).get(METADATA_KEY)
    except Exception as e:  # SafetensorError, OSError, ...: a pickle, a truncated or corrupt file
        hint = ""
        if path.suffix in (".pth", ".pt", ".pkl", ".bin", ".ckpt"):
            hint = ("; a PyTorch checkpoint is not loaded directly (no pickle is ever run): convert torchvision's "
                    "with 'googlenet convert --from torchvision IN.pth OUT.safetensors'; a training run's weights "
                    "are its weights.safetensors")
        raise UserError(f"{path} is not a valid googlenet weights file (safetensors): {one_line(e)}{hint}") from None
    if raw is None:
        raise UserError(f"{path} is a safetensors file without googlenet metadata; "
                        f"convert other checkpoints with 'googlenet convert'")
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; nesting past the parser's depth
        raise UserError(f"{path}: googlenet metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: googlenet metadata is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: not a googlenet weights file (format {meta.get('format')!r})")
    if meta.get("arch") not in list_models():
        raise UserError(f"{path}: unknown arch {meta.get('arch')!r}; this version knows {', '.join(list_models())}")
    n = meta.get("num_classes")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UserError(f"{path}: invalid num_classes {n!r}")
    names = meta.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != n):
        raise UserError(f"{path}: {len(names) if isinstance(names, list) else 'invalid'} class names for {n} classes")
    if names is not None and not all(isinstance(c, str) for c in names):
        raise UserError(f"{path}: class names must be strings")
    if names is not None and len(set(names)) != len(names):
        raise UserError(f"{path}: class names must be unique")
    if not isinstance(meta.get("aux_logits", False), bool):
        raise UserError(f"{path}: aux_logits must be true or false, got {meta.get('aux_logits')!r}")
    if not isinstance(meta.get("options") or {}, dict):
        raise UserError(f"{path}: options must be a JSON object")
    meta["preprocessing"] = check_preprocessing(meta.get("preprocessing") or default_preprocessing(), str(path))
    return meta


INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic")  # torchvision InterpolationMode values


def check_preprocessing(pre: Any, source: str) -> dict:
    """The preprocessing a weights file declares, checked: every command trusts it, so a bad value is refused here
    in one line rather than failing deep inside a transform."""
    if not isinstance(pre, dict):
        raise UserError(f"{source}: preprocessing must be a JSON object")

    def side(key: str, low: int, high: int) -> int:
        v = pre.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
            raise UserError(f"{source}: preprocessing {key} must be an integer in [{low}, {high}], got {v!r}")
        return v

    size = side("input_size", 64, 2048)
    resize = side("resize_size", size, 4 * size) if "resize_size" in pre else round(size * 256 / 224)
    interp = pre.get("interpolation", "bilinear")
    if interp not in INTERPOLATIONS:
        raise UserError(f"{source}: unknown preprocessing interpolation {interp!r}")
    stats = {}
    for key in ("mean", "std"):
        v = pre.get(key, IMAGENET_MEAN if key == "mean" else IMAGENET_STD)
        ok = isinstance(v, (list, tuple)) and len(v) == 3 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
        if not ok or (key == "std" and min(v) <= 0):
            raise UserError(f"{source}: preprocessing {key} must be 3 finite numbers"
                            f"{' above 0' if key == 'std' else ''}, got {v!r}")
        stats[key] = [float(x) for x in v]
    # What the model was trained on (old files lack these keys and get the defaults): channel order, the pixel scale
    # mean/std apply to (1: pixels in 0..1, torchvision's convention; 255: 0..255, Caffe's), and grey input.
    order = pre.get("channel_order", "RGB")
    if order not in ("RGB", "BGR"):
        raise UserError(f"{source}: preprocessing channel_order must be 'RGB' or 'BGR', got {order!r}")
    scale = pre.get("pixel_range", 1)
    if isinstance(scale, bool) or scale not in (1, 255):
        raise UserError(f"{source}: preprocessing pixel_range must be 1 or 255, got {scale!r}")
    grey = pre.get("grayscale", False)
    if not isinstance(grey, bool):
        raise UserError(f"{source}: preprocessing grayscale must be true or false, got {grey!r}")
    return {**pre, "input_size": size, "resize_size": resize, "interpolation": interp, **stats,
            "channel_order": order, "pixel_range": int(scale), "grayscale": grey}


def load_model(path: str | os.PathLike, *, arch: Optional[str] = None, num_classes: Optional[int] = None,
               map_location: str | torch.device = "cpu") -> nn.Module:
    """Builds the model a weights file describes and loads it, in eval mode, with ``model.metadata`` attached.

    ``arch`` / ``num_classes``, when given, are what the caller expects: a file that differs is refused.
    """
    with open_weights_file(path) as (f, name):  # one open file, checked once, for the metadata and the tensors
        return _load_model(f, name, Path(path), arch, num_classes, map_location)


def _load_model(f: BinaryIO, name: str, path: Path, arch: Optional[str], num_classes: Optional[int],
                map_location: str | torch.device) -> nn.Module:
    from safetensors.torch import load_file

    meta = _read_metadata(f, name, path)
    if arch is not None and meta["arch"] != arch:
        raise UserError(f"{path} holds arch {meta['arch']}, not {arch}")
    if num_classes is not None and meta["num_classes"] != num_classes:
        raise UserError(f"{path} has {meta['num_classes']} classes, not {num_classes}")
    try:
        # Built on the meta device: the initialisation that the file's tensors overwrite costs nothing.
        with torch.device("meta"):
            model = create_model(meta["arch"], num_classes=meta["num_classes"],
                                 aux_logits=bool(meta.get("aux_logits")), **(meta.get("options") or {}))
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: invalid model options: {e}") from None
    try:
        state = load_file(name, device=str(map_location))
    except Exception as e:
        raise UserError(f"{path}: cannot read tensors: {one_line(e)}") from None
    load_state_dict_checked(model, state, source=str(path), assign=True)
    attach_metadata(model, meta)
    return model.eval()


def load_state_dict_checked(model: nn.Module, state: dict, *, source: str, assign: bool = False) -> None:
    """load_state_dict(strict) with the mismatch (keys, shapes) told in one line instead of a traceback."""
    own = model.state_dict()
    fits = f"{source} does not fit {getattr(model, 'arch_name', 'the model')}"
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    parts = [f"{len(ks)} {what} (e.g. {ks[0]})"
             for what, ks in (("missing", missing), ("unexpected", unexpected)) if ks]
    if parts:
        raise UserError(f"{fits}: keys {', '.join(parts)}")
    for k, v in state.items():
        problem = tensor_problem(v)
        if problem is None and v.is_floating_point() != own[k].is_floating_point():
            problem = f"is {str(v.dtype).removeprefix('torch.')}, expected {str(own[k].dtype).removeprefix('torch.')}"
        if problem is not None:
            raise UserError(f"{source}: tensor {k} {problem}")
        if tuple(v.shape) != tuple(own[k].shape):
            raise UserError(f"{fits}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    model.load_state_dict(state, strict=True, assign=assign)


def tensor_problem(t: torch.Tensor) -> Optional[str]:
    """Why a tensor read from a file cannot be a weight (a phrase), or None: weights are dense real numbers whose
    data the file actually holds. A 2 KB pickle can declare a meta, sparse or stride-0 expanded tensor of 10^9
    rows; building a model to its shape would allocate gigabytes from nothing."""
    if t.layout != torch.strided or t.is_meta or t.is_quantized:
        return f"is not a plain dense tensor ({'meta' if t.is_meta else t.layout})"
    if t.is_complex() or t.dtype == torch.bool:
        return f"has dtype {str(t.dtype).removeprefix('torch.')}, not real numbers"
    if t.numel() and t.untyped_storage().nbytes() < t.numel() * t.element_size():
        return f"declares {t.numel():,} values but the file holds {t.untyped_storage().nbytes() // t.element_size():,}"
    return None


def attach_metadata(model: nn.Module, meta: dict) -> None:
    model.metadata = meta
    model.class_names = meta.get("class_names")
    model.preprocessing = meta.get("preprocessing") or default_preprocessing()
