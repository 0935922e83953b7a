"""The detector file: safetensors tensors plus JSON metadata, like the project's weights file (weights.py), no
pickle. The metadata names the detector kind, so each loader refuses the other's files in one line::

    {"format": "googlenet-detector", "version": 1, "detector": "rcnn" | "faster-rcnn", "classes": [...],
     "recipe": {...}, ...what the kind needs (arch, options, preprocessing, ...)}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import torch

from ..errors import UserError, one_line
from ..fileio import atomic_path, open_weights_file

FORMAT = "googlenet-detector"
VERSION = 1
METADATA_KEY = "googlenet-detector"
KINDS = ("rcnn", "faster-rcnn")


def save_detector_file(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Writes ``tensors`` and ``meta`` (with format and version added) to ``path``, atomically."""
    from safetensors.torch import save_file

    if meta.get("detector") not in KINDS:
        raise ValueError(f"meta['detector'] must be one of {KINDS}")
    meta = {"format": FORMAT, "version": VERSION, **meta}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    return path


def read_detector_file(path: str | os.PathLike, kind: Optional[str] = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, tensors) of a detector file, checked; ``kind`` set: a file of another kind is refused."""
    from safetensors.torch import load_file

    from ..weights import METADATA_KEY as WEIGHTS_KEY, safetensors_metadata

    path = Path(path)
    with open_weights_file(path, "detector file") as (f, name):
        try:
            meta_all = safetensors_metadata(f, name)
        except Exception as e:
            raise UserError(f"{path} is not a valid detector file (safetensors): {one_line(e)}") from None
        raw = meta_all.get(METADATA_KEY)
        if raw is None:
            if WEIGHTS_KEY in meta_all:
                raise UserError(f"{path} is a classifier weights file, not a detector: train one with "
                                f"'googlenet detect train'")
            raise UserError(f"{path} is a safetensors file without detector metadata")
        try:
            meta = json.loads(raw)
        except (ValueError, RecursionError):
            raise UserError(f"{path}: detector metadata is not valid JSON") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise UserError(f"{path}: not a googlenet detector file")
        if meta.get("detector") not in KINDS:
            raise UserError(f"{path}: unknown detector kind {meta.get('detector')!r}")
        if kind is not None and meta["detector"] != kind:
            raise UserError(f"{path} holds a {meta['detector']} detector, not {kind}")
        classes = meta.get("classes")
        if (not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes)
                or len(set(classes)) != len(classes)):
            raise UserError(f"{path}: the detector's class names must be a non-empty list of unique strings")
        if not isinstance(meta.get("recipe"), dict):
            raise UserError(f"{path}: the detector's recipe must be a JSON object")
        try:
            tensors = load_file(name)
        except Exception as e:
            raise UserError(f"{path}: cannot read tensors: {one_line(e)}") from None
    return meta, tensors
