"""Class probabilities for image files: the same crops and averaging as ``eval``, for files without labels."""

from __future__ import annotations

import os
import sys
from typing import Sequence

import torch
from torch.utils.data import DataLoader

from ..data.folder import ImageFolderDataset, Sample, Skipped, printable
from ..data.scan import scan_tree
from .ensemble import CropDataset, Ensemble, collate_list


def class_names(ensemble: Ensemble) -> list[str]:
    """The weights' class names; ImageNet-1k's for 1000-class weights without names; else the indices."""
    if ensemble.class_names is not None:
        return list(ensemble.class_names)
    if ensemble.num_classes == 1000:
        from ..data.imagenet import imagenet_classes

        return imagenet_classes()
    return [str(i) for i in range(ensemble.num_classes)]


def expand_inputs(inputs: Sequence[str]) -> tuple[list[str], list[dict]]:
    """Files named, and every file under the folders named (recursively, sorted, each once); missing paths and what
    the folder scan left out (cycles, duplicates, dangling links, FIFOs, devices) as errors.

    A path named outright is kept whatever it is: reading it (``load_image``) refuses a device or FIFO by its type,
    with the reason, before reading a byte."""
    is_folder = [os.path.isdir(arg) for arg in inputs]
    found, left_out = scan_tree([arg for arg, d in zip(inputs, is_folder) if d])
    under: dict[int, list[str]] = {}
    for f in found:
        under.setdefault(f.root, []).append(f.path)
    files: list[str] = []
    errors = [{"image": printable(s.path), "error": s.reason} for s in left_out]
    folder_index = 0
    for arg, d in zip(inputs, is_folder):
        if d:
            files += under.get(folder_index, [])
            reported = any(s.path == arg or s.path.startswith(os.path.join(arg, "")) for s in left_out)
            if folder_index not in under and not reported:
                errors.append({"image": printable(arg), "error": "folder holds no files"})
            folder_index += 1
        elif os.path.lexists(arg):  # a dangling link too: reading it says so
            files.append(arg)
        else:
            errors.append({"image": printable(arg), "error": "file not found"})
    return files, errors


def predict_files(ensemble: Ensemble, files: Sequence[str], scheme: str, *, topk: int = 5, batch_size: int = 64,
                  workers: int = 0, progress: bool = True) -> tuple[list[dict], list[dict]]:
    """``({"image", "topk": [{"label", "index", "prob"}]}`` per readable file, ``{"image", "error"}`` per other)."""
    from tqdm import tqdm

    names = class_names(ensemble)
    k = min(topk, ensemble.num_classes)
    base = ImageFolderDataset([Sample(str(f), -1) for f in files])
    loader = DataLoader(CropDataset(base, range(len(files)), ensemble.views(scheme)), collate_fn=collate_list,
                        batch_size=max(1, batch_size // int(scheme)), num_workers=min(workers, len(files)))
    predictions, errors = [], []
    with tqdm(total=len(files), unit="img", desc="predict", file=sys.stderr, disable=None if progress else True,
              dynamic_ncols=True) as bar:  # disable=None: the bar only on a terminal
        for batch in loader:
            bar.update(len(batch))
            errors += [{"image": printable(b.path), "error": b.reason} for b in batch if isinstance(b, Skipped)]
            items = [b for b in batch if not isinstance(b, Skipped)]
            if not items:
                continue
            probs = ensemble.probs(items, scheme, batch_size).mean(dim=0)  # images x classes
            top = torch.topk(probs, k, dim=1)
            for item, p, i in zip(items, top.values.tolist(), top.indices.tolist()):
                predictions.append({"image": printable(files[item[0]]),
                                    "topk": [{"label": names[c], "index": c, "prob": q} for c, q in zip(i, p)]})
    return predictions, errors
