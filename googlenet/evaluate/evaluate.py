"""Top-1 / top-5 of a model or an ensemble, with the paper's 1, 10 or 144 crops, in one process or under torchrun.

Counts are exact sums: under torchrun (``RANK`` set, gloo) rank r takes images r, r + world, ... (no padding, so
no image is counted twice), and the per-(models, scheme) counts are summed with ``all_reduce``. Every image's
probabilities depend only on that image, so the totals equal those of one process.

``evaluate(..., schemes=("1", "10", "144"))`` fills the paper's Table 3 grid in one pass over the data: for each
image, each scheme's crops are cut and run (they are not subsets of each other), and for every k the ensemble of
the first k models is scored.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch.utils.data import DataLoader

from ..data.folder import ImageFolderDataset, Skipped, find_split, printable, scan_image_folder
from ..errors import UserError
from .ensemble import ArrayImages, CropDataset, Ensemble, collate_list, topk_correct


@dataclass
class EvalResult:
    """counts[(k, scheme)] = (correct1, correct5) for the ensemble of the first k models."""

    images: int
    models: int
    schemes: tuple[str, ...]
    counts: dict[tuple[int, str], tuple[int, int]]
    skipped: list[dict] = field(default_factory=list)
    probs: Optional[torch.Tensor] = None  # images x classes (all models, first scheme), when keep_probs
    indices: Optional[list[int]] = None  # which base items the rows of probs are
    confusion: Optional[torch.Tensor] = None  # true class x predicted class counts (all models, confusion_scheme)

    def row(self, k: int, scheme: str) -> dict:
        c1, c5 = self.counts[(k, scheme)]
        n = max(self.images, 1)
        return {"models": k, "crops": int(scheme), "forward_passes": k * int(scheme), "correct1": c1,
                "correct5": c5, "top1": c1 / n, "top5": c5 / n, "top1_err": 1 - c1 / n, "top5_err": 1 - c5 / n}

    def summary(self, scheme: str) -> dict:
        r = self.row(self.models, scheme)
        return {**{k: r[k] for k in ("top1", "top5", "top1_err", "top5_err", "correct1", "correct5")},
                "images": self.images, "crops": int(scheme), "models": self.models, "skipped_files": self.skipped}


def distributed() -> tuple[int, int]:
    """(rank, world size); joins the torchrun process group (gloo) when launched by torchrun."""
    if "RANK" not in os.environ:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def evaluate(ensemble: Ensemble, base: Any, schemes: Sequence[str], *, indices: Optional[Sequence[int]] = None,
             batch_size: int = 64, workers: int = 0, keep_probs: bool = False, progress: bool = True,
             confusion_scheme: Optional[str] = None) -> EvalResult:
    """Scores ``base`` (items ``(3 x H x W uint8, label)`` or ``Skipped``) for every scheme and every k <= n models.

    batch_size: crops per forward pass; a loader batch holds enough images to fill it with the largest scheme.
    """
    rank, world = distributed()
    indices = list(range(len(base))) if indices is None else list(indices)
    mine = indices[rank::world]  # no padding: each image is scored by exactly one rank
    views = [v for s in schemes for v in ensemble.views(s)]
    per_batch = max(1, batch_size // max(int(s) for s in schemes))
    loader = DataLoader(CropDataset(base, mine, views), batch_size=per_batch, num_workers=workers,
                        collate_fn=collate_list, persistent_workers=False)
    n_models = len(ensemble.models)
    # counts[k - 1, s, 0 / 1] = top-1 / top-5 hits of the first k models under scheme s
    counts = torch.zeros(n_models, len(schemes), 2, dtype=torch.long)
    images = 0
    skipped: list[dict] = []
    kept_probs, kept_index = [], []
    confusion: Optional[torch.Tensor] = None
    from tqdm import tqdm

    # disable=None shows the bar on a terminal only, so logs and pipes get no carriage-return noise.
    bar = tqdm(total=len(mine), unit="img", desc="eval", file=sys.stderr,
               disable=None if progress and rank == 0 else True, dynamic_ncols=True)
    for batch in loader:
        skipped += [b.as_dict() for b in batch if isinstance(b, Skipped)]
        items = [b for b in batch if not isinstance(b, Skipped)]
        bar.update(len(batch))
        if not items:
            continue
        labels = torch.tensor([item[1] for item in items])
        images += len(items)
        for j, scheme in enumerate(schemes):
            probs = ensemble.probs(items, scheme, batch_size)  # models x images x classes
            running = probs.cumsum(dim=0)  # the first k models' sum; its ranking is their mean's
            for t, top in enumerate((1, 5)):
                counts[:, j, t] += topk_correct(running, labels, top).sum(dim=-1)
            if scheme == confusion_scheme:
                if confusion is None:
                    confusion = torch.zeros(probs.shape[-1], probs.shape[-1], dtype=torch.long)
                confusion.index_put_((labels, running[-1].argmax(dim=1)), torch.ones_like(labels), accumulate=True)
            if keep_probs and j == 0:
                kept_probs.append(probs.mean(dim=0))
                kept_index += [item[0] for item in items]
    bar.close()
    if world > 1:
        import torch.distributed as dist

        total = torch.tensor([images], dtype=torch.long)
        dist.all_reduce(counts)
        dist.all_reduce(total)
        if confusion_scheme is not None:
            sizes: list = [None] * world
            dist.all_gather_object(sizes, None if confusion is None else confusion.shape[0])
            n = next((x for x in sizes if x is not None), None)
            if n is not None:
                confusion = confusion if confusion is not None else torch.zeros(n, n, dtype=torch.long)
                dist.all_reduce(confusion)
        images = int(total)
        gathered: list = [None] * world
        dist.all_gather_object(gathered, skipped)
        skipped = sorted((s for part in gathered for s in part), key=lambda s: s["file"])
    result = EvalResult(images=images, models=n_models, schemes=tuple(schemes), skipped=skipped, confusion=confusion,
                        counts={(k + 1, s): (int(counts[k, j, 0]), int(counts[k, j, 1]))
                                for k in range(n_models) for j, s in enumerate(schemes)})
    if keep_probs and kept_probs:
        result.probs, result.indices = torch.cat(kept_probs), kept_index
    return result


def format_report(result: EvalResult) -> str:
    """The paper's Table 3 layout: one row per (models, crops), top-5 and top-1 error, cost in forward passes."""
    lines = [f"{'models':>6} {'crops':>5} {'cost':>6} {'top-5 err':>9} {'top-1 err':>9}   "
             f"(cost = forward passes per image; {result.images} images)"]
    for k in range(1, result.models + 1):
        for s in result.schemes:
            r = result.row(k, s)
            lines.append(f"{k:>6} {s:>5} {r['forward_passes']:>6} {100 * r['top5_err']:>8.2f}% "
                         f"{100 * r['top1_err']:>8.2f}%")
    return "\n".join(lines)


def eval_source(data: Optional[str], ensemble: Ensemble) -> tuple[Any, str]:
    """What ``--data`` names, as items ``(3 x H x W uint8, label)``: the embedded held-out part (no ``--data``, or
    "fashion-mnist" / "fashion-mnist-subset"), or an ImageFolder (``DIR/val/<class>/...`` or ``DIR/<class>/...``)
    with labels mapped through the models' class names when they have them."""
    from ..data import embedded

    if data is None or data in embedded.NAMES:
        _, held_out = embedded.load_fashion(data or "fashion-mnist-subset")
        if ensemble.num_classes != len(held_out.class_names) or \
                (ensemble.class_names is not None and list(ensemble.class_names) != held_out.class_names):
            what = ("other class names than" if ensemble.num_classes == len(held_out.class_names)
                    else f"{ensemble.num_classes} classes, not the {len(held_out.class_names)} of")
            raise UserError(f"the weights have {what} {held_out.name}; pass --data DIR with their classes")
        return ArrayImages(held_out.images, held_out.labels), held_out.name
    from ..data.shards import ShardImages, is_shard_set, open_shard_set

    if is_shard_set(data):  # local WebDataset shards: their val split (else train), read by offset
        shards = open_shard_set(data)
        if ensemble.class_names is not None and list(ensemble.class_names) != shards.classes:
            raise UserError(f"{printable(data)} has other classes than the weights ({len(shards.classes)}: "
                            f"{', '.join(shards.classes[:3])}, ...)")
        if len(shards.classes) > ensemble.num_classes:
            raise UserError(f"{printable(data)} has {len(shards.classes)} classes but the weights have "
                            f"{ensemble.num_classes}")
        split = "val" if "val" in shards.index["splits"] else "train"
        return ShardImages(shards, split), f"{printable(data)} ({split} shards)"
    root = find_split(data, "val")
    samples, names = scan_image_folder(root, ensemble.class_names)
    if len(names) > ensemble.num_classes:
        raise UserError(f"{printable(root)} has {len(names)} class folders but the weights have "
                        f"{ensemble.num_classes} classes")
    return ImageFolderDataset(samples), printable(root)


def spread(n: int, limit: Optional[int]) -> list[int]:
    """``limit`` indices spread evenly over ``range(n)`` (all of them when limit is None or >= n)."""
    if limit is None or limit >= n:
        return list(range(n))
    return [i * n // limit for i in range(limit)]
