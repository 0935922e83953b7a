"""What a training run reads: the embedded Fashion-MNIST (in memory), the full Fashion-MNIST, or an ImageFolder.

Every epoch is a list of global batches drawn from one seeded permutation; under DDP rank r takes images r, r+W,
r+2W, ... of each global batch. Every image is seen exactly once per epoch across ranks (no padding, no duplicates),
and all ranks run the same number of steps, so no rank waits for another at the end of an epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..data import embedded
from ..data.fast import FastPaperCrop, FastRandomResizedCrop
from ..data.folder import ImageFolderDataset, Skipped, collate_skipping, find_split, printable, scan_image_folder
from ..data.transforms import (Compose, ModelNormalize, RandomFlip, array_batch, eval_transform,
                               paper_train_transform, unit_model_input)
from ..errors import UserError
from ..weights import IMAGENET_MEAN, IMAGENET_STD
from .config import TrainConfig

Batch = tuple[Tensor, Tensor, list]  # images N x 3 x S x S, labels N, skipped files


def subset(n: int, limit: Optional[int]) -> Tensor:
    """Indices of a class-mixed fixed subset of ``limit`` items (the same for every seed), or all of them."""
    if limit is None or limit >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(12345)
    return torch.randperm(n, generator=g)[:limit].sort().values


def global_batches(n: int, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0) -> list[Tensor]:
    """The epoch's global batches: a permutation seeded by (seed, epoch), cut into batch_size pieces; last is short."""
    if not shuffle:
        return list(torch.arange(n).split(batch_size))
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return list(torch.randperm(n, generator=g).split(batch_size))


def balanced_batches(labels: Tensor, batch_size: int, *, seed: int = 0, epoch: int = 0) -> list[Tensor]:
    """--balance: len(labels) draws with replacement, each class equally likely (weight 1 / class count), seeded by
    (seed, epoch) like global_batches, so a resumed epoch draws the same images."""
    weights = 1.0 / torch.bincount(labels)[labels].double()
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.multinomial(weights, len(labels), replacement=True, generator=g)
    return list(order.split(batch_size))


def shard(batches: list[Tensor], rank: int, world: int) -> list[Tensor]:
    """This rank's part of each global batch (possibly empty when a batch has fewer images than ranks)."""
    return [b[rank::world] for b in batches]


class ArraySource:
    """An in-memory uint8 dataset (Fashion-MNIST): batches are made in the main process, no workers needed.
    A batch draws its augmentation at once, from a seed of the rank's own."""

    seeds_by_global_position = False

    def __init__(self, data: embedded.ArrayDataset, indices: Tensor, cfg: TrainConfig, *, train: bool,
                 pre: Optional[dict] = None) -> None:
        self.images, self.labels = data.images[indices], data.labels[indices]
        self.targets = self.labels
        self.size = cfg.input_size
        self.augment = cfg.augment if train else "none"
        # pre: another model's preprocessing (--init bvlc/torchvision weights, or --mean/--std/... flags): the grey
        # pixels in 0..1 go through unit_model_input; None: the set's own grey mean/std (the main job's path).
        # The images are grey already (replicated to 3 channels): no second grey conversion (torchvision's luma
        # weights sum to 0.9999, which would scale them).
        self.pre = None if pre is None else dict(pre, grayscale=False)
        self.mean, self.std = (embedded.MEAN, embedded.STD) if pre is None else (0.0, 1.0)
        if self.augment == "paper":
            self.paper = paper_train_transform(cfg.input_size, [self.mean] * 3, [self.std] * 3, scale=cfg.crop_scale,
                                               ratio=cfg.crop_ratio, color_jitter=cfg.color_jitter,
                                               lighting=cfg.lighting)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, plan: list[Tensor], first: int = 0, seed: Optional[int] = None,
                spread: tuple[int, int] = (0, 1)) -> Iterator[Batch]:
        for i in range(first, len(plan)):
            idx = plan[i]
            if seed is not None:  # batch i draws its augmentation from a seed of its own (resume-safe)
                torch.manual_seed(mix(seed, i))
            if self.augment == "paper":  # per image: crops and interpolations differ per sample
                x = torch.stack([self.paper(img.expand(3, -1, -1)) for img in self.images[idx].unsqueeze(1)]) \
                    if len(idx) else torch.empty(0, 3, self.size, self.size)
            else:
                x = array_batch(self.images[idx], self.size, self.mean, self.std, flip=self.augment == "flip")
            if self.pre is not None:
                x = unit_model_input(x, self.pre)
            yield x, self.labels[idx], []


class FolderSource:
    """An indexed dataset (an ImageFolder split, or local shards read by offset) decoded by DataLoader worker
    processes; broken files come back as ``Skipped``. Each image's augmentation is seeded by its step and its
    position in the global batch, so W processes draw what one process draws."""

    seeds_by_global_position = True

    def __init__(self, dataset, class_names, cfg: TrainConfig, *, device: torch.device,
                 targets: Optional[Tensor] = None) -> None:
        """Over any dataset of ``(image, label)`` / ``Skipped`` items with ``targets`` (or given them)."""
        self.dataset, self.class_names = dataset, class_names
        self.targets = dataset.targets if targets is None else targets
        self.workers, self.pin = cfg.workers, device.type == "cuda"

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, plan: list[Tensor], first: int = 0, seed: Optional[int] = None,
                spread: tuple[int, int] = (0, 1)) -> Iterator[Batch]:
        dataset, sampler = self.dataset, [p.tolist() for p in plan[first:]]
        if seed is not None:  # each sample's augmentation from (seed, step, global position): whatever worker or
            rank, world = spread  # rank decodes it (this rank's item j is the global batch's rank + j * world)
            dataset = SeededItems(self.dataset)
            sampler = [[(index, mix(seed, first + i, rank + j * world)) for j, index in enumerate(p)]
                       for i, p in enumerate(sampler)]
        yield from DataLoader(dataset, batch_sampler=sampler, num_workers=self.workers, collate_fn=collate_skipping,
                              pin_memory=self.pin, prefetch_factor=4 if self.workers else None)


def _as_is(sample):
    return sample


def mix(*parts: int) -> int:
    """A 63-bit seed from integers (BLAKE2b): neighbouring steps and samples get unrelated streams."""
    import hashlib

    digest = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


class SeededItems(torch.utils.data.Dataset):
    """Items addressed as (index, seed): the global generator is seeded before the item's transform draws."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        torch.manual_seed(seed)
        return self.dataset[index]


class ShardSource:
    """Training from WebDataset shards (googlenet/data/shards.py): resampled shards through a shuffle buffer, cut
    to exactly the plan's batch sizes, so every rank makes the epoch's steps (the plan's indices do not apply: a
    stream has no random access). The stream's seeds are drawn from the epoch's reseeded generator (seed_epoch),
    so a run is a function of its seed."""

    def __init__(self, shards, transform, cfg: TrainConfig, *, device: torch.device) -> None:
        self.shards, self.transform, self.class_names = shards, transform, shards.classes
        self.workers, self.buffer, self.pin = cfg.workers, cfg.shuffle_buffer, device.type == "cuda"

    def __len__(self) -> int:
        return self.shards.count("train")

    @property
    def targets(self) -> Tensor:
        raise UserError("--balance draws images by index; a shard stream has no random access (write the shards "
                        "from a balanced folder, or train from the folder)")

    seeds_by_global_position = False  # each rank's stream is its own

    def batches(self, plan: list[Tensor], first: int = 0, seed: Optional[int] = None,
                spread: tuple[int, int] = (0, 1)) -> Iterator[Batch]:
        from ..data.shards import StreamFailed, TrainStream

        # A resumed epoch skips the samples its first steps took, undecoded; the rest draw what they would have.
        stream = TrainStream(self.shards, "train", self.transform, seed=0 if seed is None else seed,
                             skip=sum(len(p) for p in plan[:first]), buffer=self.buffer)
        samples = iter(DataLoader(stream, batch_size=None, collate_fn=_as_is, num_workers=self.workers,
                                  pin_memory=self.pin, prefetch_factor=16 if self.workers else None))
        for p in plan[first:]:
            items = []
            for _ in range(len(p)):
                item = next(samples)
                if isinstance(item, StreamFailed):
                    raise UserError(item.message)
                items.append(item)
            yield collate_skipping(items)


@dataclass
class TrainData:
    name: str
    train: object  # ArraySource | FolderSource
    held_out: object
    class_names: list[str]
    preprocessing: dict  # saved with the weights: eval and predict rebuild exactly the held-out view
    notes: list[str] = field(default_factory=list)


def build_data(cfg: TrainConfig, device: torch.device) -> TrainData:
    if cfg.data is None or cfg.data in embedded.NAMES:
        name = cfg.data or "fashion-mnist-subset"
        train, held = embedded.load_fashion(name)
        if cfg.classes is not None or cfg.per_class is not None:
            train, held = embedded.select(train, held, cfg.classes, cfg.per_class)
        # The 28x28 images are upsampled whole to input_size: resize to input_size, centre crop input_size.
        pre = {"input_size": cfg.input_size, "resize_size": cfg.input_size, "interpolation": "bilinear",
               "mean": [embedded.MEAN] * 3, "std": [embedded.STD] * 3, "grayscale": True}
        # The --init weights' (or the flags') mean, std, channel order and pixel range, when given: a trunk
        # pretrained on BGR 0..255 (bvlc) or ImageNet-normalised RGB (torchvision) sees the grey images as it saw
        # its own. The images stay grey.
        custom = {k: getattr(cfg, k) for k in ("mean", "std", "channel_order", "pixel_range")
                  if getattr(cfg, k) is not None}
        if custom:
            scale = float(custom.get("pixel_range", 1))
            pre.update({"mean": [embedded.MEAN * scale] * 3, "std": [embedded.STD * scale] * 3},
                       **{k: list(v) if isinstance(v, tuple) else v for k, v in custom.items()})
        model_pre = pre if custom else None
        return TrainData(name, ArraySource(train, subset(len(train), cfg.max_train_images), cfg, train=True,
                                           pre=model_pre),
                         ArraySource(held, subset(len(held), cfg.max_eval_images), cfg, train=False, pre=model_pre),
                         list(train.class_names), pre)
    if cfg.classes is not None or cfg.per_class is not None:
        raise UserError("--classes and --per-class apply to the embedded Fashion-MNIST data only")
    from ..data.shards import is_shard_set

    if is_shard_set(cfg.data):
        return _shard_data(cfg, device)
    if cfg.shard_read != "stream":
        raise UserError(f"--shard-read applies to --data SHARDS; {printable(cfg.data)} is a folder (read by index "
                        f"already)")
    return _folder_data(cfg, device)


def _shard_data(cfg: TrainConfig, device: torch.device) -> TrainData:
    from ..data.shards import ShardImages, open_shard_set

    shards = open_shard_set(cfg.data)
    if len(shards.classes) < 2:
        raise UserError(f"{printable(cfg.data)} has {len(shards.classes)} class; training needs at least 2")
    if cfg.max_train_images is not None or cfg.max_eval_images is not None:
        raise UserError("--max-train-images / --max-eval-images pick images by index; write smaller shards instead")
    train_tf, eval_tf, pre = _folder_transforms(cfg)
    held = "val" if "val" in shards.index["splits"] else "train"
    notes = [] if held == "val" else [f"{printable(cfg.data)} has no val split: held-out figures are on train"]
    # stream: sequential reads of resampled shards, each rank its own draw. index: the global plan over the
    # shards read by offset (remote ones staged first), so W processes train what one process trains.
    train = ShardSource(shards, train_tf, cfg, device=device) if cfg.shard_read == "stream" else \
        FolderSource(ShardImages(shards, "train", train_tf), shards.classes, cfg, device=device)
    return TrainData(f"{printable(cfg.data)} (shards, {cfg.shard_read})", train,
                     FolderSource(ShardImages(shards, held, eval_tf), shards.classes, cfg, device=device),
                     shards.classes, pre, notes)


def _folder_data(cfg: TrainConfig, device: torch.device) -> TrainData:
    root = Path(cfg.data)
    if root.is_dir() and not (root / "train").exists() and not (root / "val").exists():
        return _one_folder_data(cfg, device, root)
    find_split(root, "train")  # one-line errors for a missing path or a file
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise UserError(f"{printable(root)} has no {split}/ folder (expected {printable(root)}/train/<class>/... "
                            f"and {printable(root)}/val/<class>/...)")
    train_samples, class_names = scan_image_folder(root / "train")
    if len(class_names) < 2:
        raise UserError(f"{printable(root / 'train')} has {len(class_names)} class folder; training needs at least 2")
    val_samples, _ = scan_image_folder(root / "val", class_names)
    return _sample_data(cfg, device, printable(root), train_samples, val_samples, class_names)


def _one_folder_data(cfg: TrainConfig, device: torch.device, root: Path) -> TrainData:
    """DIR/<class>/* split per class in path-hash order (googlenet/data/split.py); files placed by an earlier split
    (--split-from RUN, else the run folder's own lists, as on a resume) keep their side; the lists go to the run
    folder."""
    from ..data.split import LIST_NAMES, imbalance_note, read_lists, split_folder, write_lists
    from ..fileio import ensure_dir

    source = cfg.split_from or (cfg.out if all((Path(cfg.out) / n).is_file() for n in LIST_NAMES.values()) else None)
    previous = read_lists(source) if source else None
    train_samples, val_samples, class_names, counts = split_folder(root, cfg.val_fraction, previous)
    if len(class_names) < 2:
        raise UserError(f"{printable(root)} has {len(class_names)} class folder; training needs at least 2")
    write_lists(ensure_dir(cfg.out), root, train_samples, val_samples, class_names)
    notes = ["class counts (train/val): " + ", ".join(f"{printable(c)} {v['train']}/{v['val']}"
                                                      for c, v in counts.items())]
    if previous is not None:
        kept = sum(v["kept"] for v in counts.values())
        notes.append(f"split: {kept} files kept their side from {printable(source)}, "
                     f"{len(train_samples) + len(val_samples) - kept} placed afresh")
    if note := imbalance_note(counts):
        notes.append(note)
    return _sample_data(cfg, device, f"{printable(root)} (one-folder split, val {cfg.val_fraction:g})",
                        train_samples, val_samples, class_names, notes)


def _sample_data(cfg: TrainConfig, device: torch.device, name: str, train_samples, val_samples, class_names,
                 notes: Optional[list[str]] = None) -> TrainData:
    """TrainData over scanned folder samples, each split cut to its --max-train-images / --max-eval-images."""
    train_tf, eval_tf, pre = _folder_transforms(cfg)

    def source(samples, limit: Optional[int], transform) -> FolderSource:
        samples = [samples[i] for i in subset(len(samples), limit).tolist()]
        # The fast decoder takes the path itself (decode and crop in one step), so it is the dataset's loader.
        fast = isinstance(transform, FastRandomResizedCrop)
        dataset = ImageFolderDataset(samples, None if fast else transform, load=transform if fast else None)
        return FolderSource(dataset, class_names, cfg, device=device,
                            targets=torch.tensor([s.label for s in samples], dtype=torch.long))

    return TrainData(name, source(train_samples, cfg.max_train_images, train_tf),
                     source(val_samples, cfg.max_eval_images, eval_tf), class_names, pre, notes or [])


def _folder_transforms(cfg: TrainConfig):
    """(train transform, held-out transform, preprocessing): crops and distortions on 0..1 RGB pixels, then the
    preprocessing's grey conversion, pixel scale, channel order and mean/std (``ModelNormalize``, the same steps
    ``model_input`` applies at eval and predict time), so training sees what evaluation will. The preprocessing, saved
    with the weights, is the config's keys, which ``config.resolve`` fills from the --init weights' metadata unless
    set; ImageNet's RGB 0..1 for what is unset."""
    pre = {"input_size": cfg.input_size, "resize_size": cfg.resize_size or round(cfg.input_size * 256 / 224),
           "interpolation": "bilinear", "mean": list(cfg.mean or IMAGENET_MEAN), "std": list(cfg.std or IMAGENET_STD),
           "channel_order": cfg.channel_order or "RGB", "pixel_range": cfg.pixel_range or 1,
           "grayscale": bool(cfg.grayscale)}
    size, resize, to_model = cfg.input_size, pre["resize_size"], ModelNormalize(pre)
    view = eval_transform(size, resize, None, None, normalize=False)  # resize + centre crop, 0..1
    if cfg.augment == "paper":  # the fast decoder with the same recipe: decodes only what the crop needs
        train_tf = FastPaperCrop(size, pre["mean"], pre["std"], scale=cfg.crop_scale, ratio=cfg.crop_ratio,
                                 color_jitter=cfg.color_jitter, lighting=cfg.lighting, to_model=to_model)
    elif cfg.augment == "flip":
        train_tf = Compose(view, RandomFlip(), to_model)
    else:
        train_tf = Compose(view, to_model)
    return train_tf, Compose(view, to_model), pre


def skipped_as_dicts(skipped: list[Skipped]) -> list[dict]:
    seen: dict[str, dict] = {}
    for s in skipped:
        d = s.as_dict() if isinstance(s, Skipped) else dict(s)
        seen.setdefault(d["file"], d)
    return [seen[k] for k in sorted(seen)]
