"""Class-agnostic region proposals: selective search (OpenCV's ``cv2.ximgproc``), MultiBox's boxes, their union.

The paper (section 7, ILSVRC detection): "the selective search approach combined with multi-box predictions for
higher object bounding box recall"; "the super-pixel size was increased by 2x" to halve the selective search
proposals, and 200 MultiBox proposals were added. OpenCV's fast mode is R-CNN's ("fast" in Uijlings et al.): the
graph segmentation with k = 150, 300 (base_k 150, inc_k 150), sigma 0.8, HSV and Lab, two strategies. The graph
segmentation's k sets the superpixel scale (Felzenszwalb and Huttenlocher: larger k, larger components), so the
paper's doubled superpixels are base_k = inc_k = 300 here ("ss-fast2x").

Proposals are cached on disk, one small .npy per image, keyed by the image's bytes and every setting, so a second
run (a second epoch, eval after train, another detector on the same data) does not recompute them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

import numpy as np

from ..fileio import atomic_path

SS_METHODS = {"ss": (150, 150, 0.8, "fast"), "ss-fast2x": (300, 300, 0.8, "fast"), "ss-quality": (150, 150, 0.8, "quality")}
METHODS = tuple(SS_METHODS) + ("multibox", "ss+multibox", "ss-fast2x+multibox")
MIN_SIDE = 8  # boxes narrower or lower than this (pixels) are dropped: R-CNN's code drops tiny ones too


def cache_dir() -> Path:
    """$GOOGLENET_PROPOSAL_CACHE, else $XDG_CACHE_HOME/googlenet/proposals (~/.cache/googlenet/proposals)."""
    env = os.environ.get("GOOGLENET_PROPOSAL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "googlenet" / "proposals"


def selective_search(rgb: np.ndarray, method: str = "ss-fast2x", max_proposals: int = 2000) -> np.ndarray:
    """(N, 4) float32 xyxy boxes, 0-based continuous pixels, in selective search's own order (its hierarchy's
    ranking, which R-CNN keeps), tiny and duplicate boxes removed, at most ``max_proposals``."""
    import cv2

    if method not in SS_METHODS:
        raise ValueError(f"unknown selective search method {method!r}; choose from {', '.join(SS_METHODS)}")
    base_k, inc_k, sigma, mode = SS_METHODS[method]
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(rgb[:, :, ::-1]))  # OpenCV wants BGR
    if mode == "fast":
        ss.switchToSelectiveSearchFast(base_k, inc_k, sigma)
    else:
        ss.switchToSelectiveSearchQuality(base_k, inc_k, sigma)
    # OpenCV ranks the hierarchy's boxes by level times C's rand() (selectivesearchsegmentation.cpp), the
    # process-wide libc generator, which cv2.setRNGSeed does not reach. Seeded here, each image's ranking (and so
    # which boxes survive max_proposals) is a function of the image alone, not of the images searched before it.
    _seed_libc_rand(0)
    rects = np.asarray(ss.process(), np.float32).reshape(-1, 4)  # x, y, w, h in whole pixels
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    keep = (rects[:, 2] >= MIN_SIDE) & (rects[:, 3] >= MIN_SIDE)
    boxes = boxes[keep]
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)][:max_proposals]


def _seed_libc_rand(seed: int) -> None:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(None) if os.name == "posix" else ctypes.CDLL(ctypes.util.find_library("c"))
        libc.srand(ctypes.c_uint(seed))
    except (OSError, AttributeError, TypeError):  # no C library to reach: the ranking then depends on history
        pass


def _cache_key(image_bytes: bytes, method: str, max_proposals: int) -> str:
    import cv2

    h = hashlib.sha256(image_bytes)
    h.update(f"|{method}|{SS_METHODS.get(method)}|{max_proposals}|{MIN_SIDE}|cv2 {cv2.__version__}|srand 0".encode())
    return h.hexdigest()


def cached_selective_search(rgb: np.ndarray, method: str, max_proposals: int,
                            cache: Optional[Path] = None) -> tuple[np.ndarray, bool]:
    """selective_search through the on-disk cache; returns (boxes, whether it came from the cache). The key is the
    decoded pixels' hash (what the search sees), so a re-encoded but identical image also hits."""
    cache = cache_dir() if cache is None else Path(cache)
    key = _cache_key(np.ascontiguousarray(rgb).tobytes() + str(rgb.shape).encode(), method, max_proposals)
    path = cache / key[:2] / f"{key}.npy"
    try:
        boxes = np.load(path, allow_pickle=False)
        if boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4:
            return boxes, True
    except (OSError, ValueError, EOFError):
        pass  # absent or unreadable: recompute and rewrite
    boxes = selective_search(rgb, method, max_proposals)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, boxes, allow_pickle=False)
    except OSError:
        pass  # a read-only cache only costs the recomputation
    return boxes, False


def box_recall(proposals: list[np.ndarray], gts: list[np.ndarray], counts: list[int],
               thresholds=(0.5, 0.7)) -> dict:
    """Recall of the ground-truth boxes by the first n proposals of each image, for each n in ``counts``:
    {threshold: [recall at each n]}. A ground-truth box is recalled when some proposal overlaps it by IoU >= t."""
    import torch
    from torchvision.ops import box_iou

    best = {n: [] for n in counts}
    for props, gt in zip(proposals, gts):
        if len(gt):
            for n in counts:
                p = props[:n]
                best[n].append(box_iou(torch.from_numpy(gt), torch.from_numpy(p)).max(1).values.numpy() if len(p)
                               else np.zeros(len(gt)))
    return {t: [float(np.mean(np.concatenate(best[n]) >= t)) if best[n] else float("nan") for n in counts]
            for t in thresholds}


def propose(rgb: np.ndarray, method: str, count: int, multibox=None, cache: Optional[Path] = None) -> np.ndarray:
    """The proposals of ``method`` for one image, at most ``count``: selective search (cached), MultiBox's boxes,
    or their union ("ss+multibox": MultiBox's boxes first, being ranked by confidence, then selective search's)."""
    if method not in METHODS:
        raise ValueError(f"unknown proposal method {method!r}; choose from {', '.join(METHODS)}")
    parts = method.split("+")
    boxes = []
    if "multibox" in parts:
        if multibox is None:
            from ..errors import UserError

            raise UserError(f"proposal method {method} needs a trained MultiBox (a detector trained with it)")
        boxes.append(multibox.propose(rgb))
    for p in parts:
        if p in SS_METHODS:
            boxes.append(cached_selective_search(rgb, p, max(count, 1), cache)[0])
    out = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
    return out[:count].astype(np.float32)
