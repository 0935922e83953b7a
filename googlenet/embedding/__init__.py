"""Features of images from any GoogLeNet: ``googlenet embed`` and ``googlenet.embed(...)``.

    inputs (IMAGE | DIR | DIR/<class>/...)  ->  the weights' centre crop + model_input (their own preprocessing)
        ->  the model up to LAYER (default: the 1024-d pooled features before the classifier), averaged over
            height and width  ->  OUT.npz: features (N x D float32), paths, labels, class_names, layer, weights

Batched through a DataLoader (``workers`` decoding processes), written in chunks to ``OUT.partial/`` so that a
rerun with the same arguments continues where a killed one stopped (``store.py``). Unreadable files in a folder
are reported and left out, as ``predict`` and ``eval`` do; one unreadable IMAGE is an error.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..fileio import printable
from .features import DEFAULT_LAYER, check_layer, feature_predictor
from .inputs import Inputs, list_inputs
from .store import Partial, chunk_arrays, chunk_plan, files_fingerprint, load_npz, model_fingerprint, write_npz

__all__ = ["DEFAULT_LAYER", "Embeddings", "embed", "load_npz"]


@dataclass
class Embeddings:
    features: np.ndarray  # N x D float32, one row per readable file, in file-list order
    paths: list[str]  # per row: the file's name relative to the folder given (an IMAGE: its own name)
    labels: np.ndarray  # per row: index into class_names, or -1 (no class folders, a single image)
    class_names: list[str]
    layer: str
    weights: str
    dim: int = 0  # features per image
    skipped: list[dict] = field(default_factory=list)  # {"file", "error"} per file left out
    computed: int = 0  # files read in this call (the rest came from a partial run)
    resumed: int = 0


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for, but CUDA is not available here")
    return torch.device(name)


class _Memory:
    """The in-memory stand-in for ``store.Partial`` when no output file is given (nothing to resume)."""

    def __init__(self) -> None:
        self.chunks: list[dict] = []
        self.done = 0

    def add(self, start, stop, index, features, skipped) -> None:
        self.chunks.append({"rows": len(index), "dim": features.shape[1], **chunk_arrays(index, features, skipped)})
        self.done = stop

    def read(self, entry: dict, keys: Sequence[str]) -> dict:
        return entry

    def discard(self) -> None:
        self.chunks = []


def embed(inputs: str | os.PathLike, weights: str | os.PathLike | nn.Module, *, layer: Optional[str] = None,
          out: Optional[str | os.PathLike] = None, batch_size: int = 64, workers: int = 0, device: str = "auto",
          precision: str = "fp32", chunk: int = 4096, restart: bool = False, progress: bool = True,
          load_features: bool = True) -> Embeddings:
    """Pooled ``layer`` features of every image under ``inputs`` (see the module docstring).

    weights: what ``--weights`` takes (a weights file, torchvision, bvlc, inception5h) or a loaded model with
    ``preprocessing``. out: an .npz to write (atomically), with resumable progress in ``out + ".partial"``; None
    keeps everything in memory. chunk: files per saved chunk (the most a kill can lose). load_features=False
    (with ``out``) leaves ``features`` empty: the command line's way to embed more images than fit in memory.
    """
    from ..pretrained import load_weights_arg
    from ..weights import default_preprocessing

    if batch_size < 1 or chunk < 1 or workers < 0:
        raise UserError("batch_size and chunk must be >= 1, workers >= 0")
    model = weights if isinstance(weights, nn.Module) else load_weights_arg(weights)
    if getattr(model, "preprocessing", None) is None:  # a model made by create_model: ImageNet's, as `layers` does
        model.preprocessing = default_preprocessing()
    weights_name = getattr(model, "arch_name", "model") if isinstance(weights, nn.Module) else printable(weights)
    layer = check_layer(model, layer)
    dev = _device(device)
    if precision not in ("fp32", "bf16"):
        raise UserError(f"--precision for embed must be fp32 or bf16, got {precision!r}")
    if out is not None and os.path.isdir(out):  # found now, not after hours of work at the final rename
        raise UserError(f"--out {printable(out)} is a folder; name an .npz file")
    items = list_inputs(inputs)
    labels = [s.label for s in items.samples]
    fingerprint = {"weights": model_fingerprint(model), "layer": layer, "precision": precision,
                   "files": files_fingerprint(items.names, labels), "count": len(items.samples)}
    store = Partial(out, fingerprint, restart=restart) if out is not None else _Memory()
    resumed = store.done
    try:
        computed = _run(model, layer, items, store, batch_size=batch_size, workers=workers, device=dev,
                        precision=precision, chunk=chunk, progress=progress)
        result = _collect(store, items, layer, weights_name, computed, resumed, load_features or out is None)
        if out is not None:
            write_npz(out, store, result.dim, len(result.paths), {
                "paths": np.array(result.paths, dtype=str), "labels": result.labels.astype(np.int64),
                "class_names": np.array(items.class_names, dtype=str), "layer": np.array(layer),
                "weights": np.array(weights_name), "arch": np.array(str(getattr(model, "arch_name", ""))),
                "preprocessing": np.array(json.dumps(getattr(model, "preprocessing", None))),
                "skipped_paths": np.array([s["file"] for s in result.skipped], dtype=str),
                "skipped_reasons": np.array([s["error"] for s in result.skipped], dtype=str)})
    except UserError as e:
        if getattr(e, "discard", False):  # nothing worth keeping: no readable image at all
            store.discard()
        raise
    store.discard()  # OUT is complete; the chunks are no longer needed
    return result


def _run(model: nn.Module, layer: str, items: Inputs, store, *, batch_size: int, workers: int,
         device: torch.device, precision: str, chunk: int, progress: bool) -> int:
    """Embeds positions [store.done, N) chunk by chunk; returns how many files were read."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from ..data.folder import ImageFolderDataset, Skipped
    from ..data.transforms import model_input
    from ..evaluate.ensemble import CropDataset, collate_list, view_for

    n = len(items.samples)
    plan = chunk_plan(n, store.done, chunk, batch_size)
    if not plan:
        return 0
    view = view_for(model, "1")  # the weights' resize + centre crop, as eval and predict cut it
    pre = dict(model.preprocessing)
    predictor = feature_predictor(model, layer, precision=precision, device=device)
    position = {s.path: i for i, s in enumerate(items.samples)}
    dataset = CropDataset(ImageFolderDataset(items.samples), range(n), [view])
    batches = [b for _, _, bs in plan for b in bs]
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate_list, num_workers=min(workers, len(batches)))
    it = iter(loader)
    with tqdm(total=n, initial=store.done, unit="img", desc="embed", file=sys.stderr, dynamic_ncols=True,
              disable=None if progress else True) as bar:  # None: shown on a terminal only
        for start, stop, chunk_batches in plan:
            index, feats, skipped = [], [], []
            for _ in chunk_batches:
                batch = next(it)
                bar.update(len(batch))
                skipped += [(position[b.path], b.reason) for b in batch if isinstance(b, Skipped)]
                good = [b for b in batch if not isinstance(b, Skipped)]
                if not good:
                    continue
                crops = torch.cat([b[2][view] for b in good])  # N x 3 x S x S uint8, one centre crop each
                x = model_input(crops, pre).to(device, non_blocking=True)
                feats.append(predictor(x).float().cpu().numpy())
                index += [b[0] for b in good]
            if items.single and skipped:
                err = UserError(f"{items.names[0]}: {skipped[0][1]}")
                err.discard = True
                raise err
            store.add(start, stop, np.array(index, dtype=np.int64),
                      np.concatenate(feats) if feats else np.zeros((0, 0), np.float32), skipped)
    return n - plan[0][0]


def _collect(store, items: Inputs, layer: str, weights: str, computed: int, resumed: int,
             load_features: bool) -> Embeddings:
    """The rows (file order) and the skipped files of every chunk, and their features when asked for."""
    keys = ("index", "skipped_index", "skipped_reason") + (("features",) if load_features else ())
    index, feats, skipped = [], [], []
    dim = max((int(e["dim"]) for e in store.chunks if e["rows"]), default=0)
    for entry in store.chunks:
        c = store.read(entry, keys)
        index.append(c["index"])
        if load_features and len(c["index"]):
            feats.append(c["features"])
        skipped += list(zip(c["skipped_index"].tolist(), c["skipped_reason"].tolist()))
    index = np.concatenate(index) if index else np.zeros(0, np.int64)
    report = [{"file": items.names[i], "error": r} for i, r in skipped]
    if len(index) == 0:
        first = f" (first: {report[0]['file']}: {report[0]['error']})" if report else ""
        err = UserError(f"no readable image among {len(items.samples)} file(s){first}")
        err.discard = True
        raise err
    features = np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)
    return Embeddings(features, [items.names[i] for i in index.tolist()],
                      np.array([items.samples[i].label for i in index.tolist()], dtype=np.int64),
                      list(items.class_names), layer, weights, dim, report, computed, resumed)
