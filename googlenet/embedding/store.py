"""Resumable output: features written chunk by chunk to ``OUT.partial/``, assembled into ``OUT`` (.npz) at the end.

    OUT.partial/manifest.json        what the features are of (the fingerprint) and the chunks done, in order
    OUT.partial/chunk-000000000.npz  index (positions in the file list), features (n x D), skipped positions/reasons

Every file is written atomically (``googlenet.fileio.atomic_path``): a kill at any moment leaves the chunks
listed in the manifest complete, and a rerun with the same arguments continues after the last one. A rerun whose
weights, layer, precision or file list differ is refused in one line (``--restart`` discards the partial run):
mixing features of two models in one array would be silent and wrong. A folder, not one growing file: rewriting a
file of all features so far after every chunk would cost O(N^2) bytes over a million images.

The final .npz is streamed chunk by chunk into a zip (numpy's own .npy header, then the chunks' bytes), so its
size is not bounded by memory, then renamed onto OUT: OUT is never half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import UserError, one_line
from ..fileio import (MiB, Unreadable, atomic_path, atomic_write_text, ensure_dir, open_regular, printable,
                      read_bounded)

MANIFEST = "manifest.json"


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of every tensor (name, dtype, shape, bytes), the arch and the preprocessing: the same weights from
    any source (file, named source, a module) give the same value; one changed number gives another."""
    h = hashlib.sha256()
    h.update(json.dumps([getattr(model, "arch_name", None), getattr(model, "preprocessing", None)],
                        sort_keys=True, default=str).encode())
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-d tensors (BN counters) as 1-d
    return h.hexdigest()


def files_fingerprint(names: Iterable[str], labels: Iterable[int]) -> str:
    h = hashlib.sha256()
    for name, label in zip(names, labels):
        h.update(f"{name}\t{label}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


_WHAT = {"weights": "the weights differ", "layer": "the layer differs", "precision": "the precision differs",
         "files": "the file list differs", "count": "the number of files differs"}


class Partial:
    """The ``OUT.partial`` folder of one run: its fingerprint and the chunks done."""

    def __init__(self, out: str | os.PathLike, fingerprint: dict, *, restart: bool = False) -> None:
        self.folder = Path(f"{os.fspath(out)}.partial")
        self.fingerprint = fingerprint
        self.chunks: list[dict] = []
        if restart:
            self.discard()
        manifest = self.folder / MANIFEST
        if manifest.is_file():
            try:
                old = json.loads(read_bounded(manifest, limit=64 * MiB))
                _check_chunks(old)
            except (Unreadable, ValueError, TypeError, KeyError) as e:
                raise UserError(f"{printable(manifest)} is not a manifest of embed ({one_line(e) or 'bad layout'}); "
                                f"pass --restart to discard {printable(self.folder)}") from None
            differs = [k for k in _WHAT if old.get("fingerprint", {}).get(k) != fingerprint.get(k)]
            if differs:
                old_n = old.get("fingerprint", {}).get("count")
                raise UserError(f"{printable(self.folder)} holds a partial run for other arguments: "
                                f"{_WHAT[differs[0]]} ({old_n} files then, {fingerprint['count']} now); pass "
                                f"--restart to discard it and start over")
            self.chunks = old["chunks"]
        ensure_dir(self.folder)
        self._write_manifest()

    @property
    def done(self) -> int:
        """Positions [0, done) of the file list are embedded or reported."""
        return int(self.chunks[-1]["stop"]) if self.chunks else 0

    def add(self, start: int, stop: int, index: np.ndarray, features: np.ndarray, skipped: list[tuple[int, str]]):
        name = f"chunk-{start:09d}.npz"
        with atomic_path(self.folder / name) as tmp, open(tmp, "wb") as f:
            np.savez(f, **chunk_arrays(index, features, skipped))
        self.chunks.append({"start": start, "stop": stop, "file": name, "rows": len(index),
                            "dim": int(features.shape[1]) if features.ndim == 2 else 0})
        self._write_manifest()  # after the chunk itself: the manifest never names a chunk not fully written

    def _write_manifest(self) -> None:
        atomic_write_text(self.folder / MANIFEST, json.dumps({"fingerprint": self.fingerprint, "chunks": self.chunks}))

    def read(self, entry: dict, keys: Sequence[str]) -> dict:
        path = self.folder / entry["file"]
        try:
            # A regular file only (a FIFO put there would block np.load), no pickle; members read when asked for.
            with open_regular(path, limit=1 << 40) as (f, _), np.load(f, allow_pickle=False) as z:
                return {k: z[k] for k in keys}
        except (Unreadable, OSError, ValueError, KeyError) as e:
            raise UserError(f"{printable(path)}: unreadable chunk ({one_line(e)}); pass --restart") from None

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def chunk_arrays(index: np.ndarray, features: np.ndarray, skipped: list[tuple[int, str]]) -> dict:
    """What a chunk holds: positions, features, and the positions skipped with their reasons."""
    return {"index": index.astype(np.int64), "features": features.astype(np.float32, copy=False),
            "skipped_index": np.array([i for i, _ in skipped], dtype=np.int64),
            "skipped_reason": np.array([r for _, r in skipped], dtype=str)}


def _check_chunks(manifest) -> None:
    """A manifest's chunks name files of this folder only and cover [0, done) in order; else ValueError."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("chunks"), list):
        raise ValueError("bad layout")
    stop = 0
    for c in manifest["chunks"]:
        if not (isinstance(c, dict) and c.get("start") == stop and isinstance(c.get("stop"), int)
                and c["stop"] > stop and c.get("file") == f"chunk-{stop:09d}.npz"
                and isinstance(c.get("rows"), int) and isinstance(c.get("dim"), int)):
            raise ValueError(f"chunk entry {str(c)[:80]} does not follow the previous one")
        stop = c["stop"]


def write_npz(out: str | os.PathLike, partial: Partial, dim: int, n_good: int, arrays: dict) -> None:
    """``OUT``: ``features`` (n_good x dim float32) streamed from the chunks in order, then ``arrays``."""
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("features.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
                                                     "fortran_order": False, "shape": (n_good, dim)})
            written = 0
            for entry in partial.chunks:
                feats = partial.read(entry, ("features",))["features"]
                if len(feats) and feats.shape[1] != dim:
                    raise UserError(f"{printable(partial.folder)}: chunk {entry['file']} has {feats.shape[1]} "
                                    f"features per image, not {dim}; pass --restart")
                f.write(np.ascontiguousarray(feats, dtype="<f4").tobytes())
                written += len(feats)
            if written != n_good:
                raise UserError(f"{printable(partial.folder)}: the chunks hold {written} rows, expected {n_good}; "
                                f"pass --restart")
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


def load_npz(path: str | os.PathLike) -> dict:
    """An embed output as plain arrays (no pickle)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def chunk_plan(n: int, start: int, chunk: int, batch: int) -> list[tuple[int, int, list[list[int]]]]:
    """(start, stop, batches of positions) for every chunk of [start, n): batches never cross a chunk's end."""
    plan = []
    for a in range(start, n, chunk):
        b = min(a + chunk, n)
        plan.append((a, b, [list(range(i, min(i + batch, b))) for i in range(a, b, batch)]))
    return plan

