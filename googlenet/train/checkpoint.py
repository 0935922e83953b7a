"""Checkpoints: plain tensors and Python values only, so ``torch.load(path, weights_only=True)`` reads them.

A checkpoint holds what an uninterrupted run would still have in memory at an epoch boundary: model, EMA, optimizer,
schedule position, every RNG state (as tensors), the resolved config, the metrics so far. Written atomically: a
kill -9 while saving leaves the previous checkpoint whole.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

import torch

from ..errors import UserError, one_line
from ..fileio import atomic_path, open_weights_file

FORMAT = "googlenet-checkpoint"
VERSION = 1


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, **fields) -> None:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, "rng": rng, **fields}, tmp)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    try:
        with open_weights_file(path, "checkpoint") as (f, _), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "pickle protocol 4" notices from the weights-only unpickler
            ck = torch.load(f, map_location=map_location, weights_only=True)  # a regular file, bounded
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path} is not a readable checkpoint: {one_line(e, 200)}") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise UserError(f"{path} is not a googlenet training checkpoint")
    return ck


def resume_path(spec: Optional[str], out: str | os.PathLike) -> Optional[Path]:
    """``--resume auto``: <out>/last.pt when it exists (else a fresh start); ``--resume PATH``: that file."""
    if spec is None:
        return None
    if spec == "auto":
        p = Path(out) / "last.pt"
        return p if p.is_file() else None
    if not os.path.lexists(spec):  # anything else that exists (a FIFO, a folder) is refused by load_checkpoint
        raise UserError(f"checkpoint not found: {spec}")
    return Path(spec)
