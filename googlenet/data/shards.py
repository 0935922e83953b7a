"""WebDataset tar shards: written from an image folder (or the embedded set), read as streams for training and
evaluation.

A cluster reads a few large files sequentially far better than millions of small ones from a network file system,
so ``googlenet shards`` packs a dataset into tar shards in WebDataset's layout (``KEY.jpg`` / ``KEY.png`` +
``KEY.cls``; the format timm and OpenCLIP train from) beside an ``index.json`` that names the classes, the shards
and their sample counts. Writing is deterministic: samples in the folder's sorted order, each shard cut when it
reaches ``shard_bytes``, tar members with fixed owner and mtime, so the same folder gives the same bytes.

Reading follows WebDataset's recipe for each use:

* training: shards resampled with replacement (``ResampledShards``) and a shuffle buffer, seeded from
  (seed, epoch, rank, worker), cut to exactly the steps of an epoch, so every rank makes the same number of steps
  (whole shards split across ranks give uneven counts, and the rank that runs out first hangs DDP's collectives);
* evaluation: local shards read by offset (``ShardImages``: the tar headers indexed once), so evaluation's own
  split across ranks applies: each sample scored exactly once, no padding, no duplicate, counts summed over ranks.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import os
import random
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch

from ..errors import UserError
from ..fileio import Unreadable, atomic_path, atomic_write_text, ensure_dir, printable, read_bounded, read_image_file
from .images import JPEG_MAGIC, BadImage, decode_image_bytes
from .remote import is_remote, locate, open_bounded, read_remote, root_of, sha256_of, stage, transfer_error
from .scan import Skipped

FORMAT = "googlenet-shards"
VERSION = 1
INDEX = "index.json"
INDEX_MAX_BYTES = 64 << 20
SIZE_UNITS = {"": 1, "B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "KIB": 1 << 10, "MIB": 1 << 20,
              "GIB": 1 << 30}
IMAGE_EXTENSIONS = ("jpg", "png")  # what a shard holds: other formats are re-encoded as PNG when written


def parse_size(text: str) -> int:
    """'256MB', '1GiB', '500kb', '4096' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).upper() not in SIZE_UNITS or float(m.group(1)) <= 0:
        raise UserError(f"--shard-size must be a size such as 256MB or 1GiB, got {text!r}")
    return max(1, int(float(m.group(1)) * SIZE_UNITS[m.group(2).upper()]))


# --- Writing -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One image to pack: its file (or bytes, for the embedded set) and its class index."""
    label: int
    path: Optional[str] = None
    data: Optional[bytes] = None


def encode(item: Item, resize: Optional[int]) -> tuple[str, bytes] | tuple[None, str]:
    """(extension, bytes) of one sample as it goes into a shard, or (None, why) for a file that is not a readable
    image. The file is read under the project's rules (regular files only, bounded), decoded once to check it;
    the original bytes are kept when they are a JPEG or PNG that needs no resizing."""
    from PIL import Image

    try:
        data = item.data if item.data is not None else read_image_file(item.path)
        image = decode_image_bytes(data)  # 3 x H x W uint8; refuses bombs, truncations, non-images
    except (Unreadable, BadImage) as e:
        return None, str(e)
    kind = "jpg" if data[:3] == JPEG_MAGIC else "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else None
    h, w = image.shape[1:]
    shrink = resize is not None and min(h, w) > resize
    if kind is not None and not shrink:
        return kind, data
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    if shrink:  # the shorter side to ``resize``, as the training and eval transforms would start by doing
        scale = resize / min(h, w)
        pil = pil.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    out = io.BytesIO()
    if kind == "jpg":
        pil.save(out, "JPEG", quality=95)
    else:
        kind = "png"
        pil.save(out, "PNG")
    return kind, out.getvalue()


def _encode_job(args: tuple[Item, Optional[int]]):
    return encode(*args)


def tar_bytes(payload: int) -> int:
    """What a member adds to a tar file: a 512-byte header and the payload padded to 512 bytes."""
    return 512 + -(-payload // 512) * 512


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = len(payload), 0, 0o444, "", ""
    tar.addfile(info, io.BytesIO(payload))


def write_split(items: Sequence[Item], out: Path, split: str, *, shard_bytes: int, resize: Optional[int],
                workers: int, say: Callable[[str], None]) -> dict:
    """Packs ``items`` into ``out/split/NNNNNN.tar``; returns the split's index entry. Images are read and encoded
    by ``workers`` processes (in order: the output does not depend on their number)."""
    folder = ensure_dir(out / split)
    shards, skipped, per_class = [], [], {}
    tar, current, count, size = None, None, 0, 0

    def close() -> None:
        nonlocal tar
        if tar is not None:
            tar.close()
            handle.__exit__(None, None, None)
            shards.append({"file": f"{split}/{current.name}", "count": count, "bytes": current.stat().st_size,
                           "sha256": sha256_of(current)})
            tar = None

    jobs = [(item, resize) for item in items]
    pool = None
    if workers > 1 and len(jobs) > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(workers)
        results = pool.imap(_encode_job, jobs, chunksize=16)
    else:
        results = map(_encode_job, jobs)
    try:
        key = 0
        for item, (ext, payload) in zip(items, results):
            if ext is None:
                skipped.append({"file": printable(item.path or "?"), "error": payload})
                continue
            label = str(item.label).encode()
            grows = tar_bytes(len(payload)) + tar_bytes(len(label))
            if tar is not None and size + grows > shard_bytes:
                close()
            if tar is None:
                current = folder / f"{len(shards):06d}.tar"
                handle = atomic_path(current)  # a shard is complete or absent: never half-written
                tar = tarfile.open(handle.__enter__(), "w", format=tarfile.USTAR_FORMAT)
                count, size = 0, 0
            name = f"{split}-{key:09d}"
            _add(tar, f"{name}.{ext}", payload)
            _add(tar, f"{name}.cls", label)
            key, count, size = key + 1, count + 1, size + grows
            per_class[item.label] = per_class.get(item.label, 0) + 1
        close()
    finally:
        if pool is not None:
            pool.terminate()
        if tar is not None:  # an error mid-shard: the partial shard is discarded, not left behind
            tar.close()
            handle.__exit__(RuntimeError, RuntimeError("aborted"), None)
    say(f"{split}: {sum(s['count'] for s in shards)} images in {len(shards)} shard(s), {len(skipped)} skipped")
    return {"count": sum(s["count"] for s in shards), "shards": shards, "skipped": skipped,
            "per_class": {str(k): v for k, v in sorted(per_class.items())}}


def folder_items(root: Path, val_fraction: float) -> tuple[list[str], dict[str, list[Item]]]:
    """(class names, split -> items) of an ImageFolder (train/ and val/), a one-folder DIR/<class>/* (split as
    training splits it: googlenet/data/split.py) or the embedded Fashion-MNIST subset (``None`` or its name)."""
    from .folder import scan_image_folder

    def items(samples) -> list[Item]:
        return [Item(s.label, path=s.path) for s in samples]

    if (root / "train").is_dir():
        train, names = scan_image_folder(root / "train")
        splits = {"train": items(train)}
        if (root / "val").is_dir():
            splits["val"] = items(scan_image_folder(root / "val", names)[0])
        return names, splits
    from .split import split_folder

    train, val, names, _ = split_folder(root, val_fraction, None)
    return names, {"train": items(train), "val": items(val)}


def embedded_items(name: str) -> tuple[list[str], dict[str, list[Item]]]:
    from PIL import Image

    from . import embedded

    def items(ds) -> list[Item]:
        out = []
        for image, label in zip(ds.images, ds.labels):
            buf = io.BytesIO()
            Image.fromarray(image.numpy() if hasattr(image, "numpy") else image).save(buf, "PNG")
            out.append(Item(int(label), data=buf.getvalue()))
        return out

    train, held = embedded.load_fashion(name)
    return list(train.class_names), {"train": items(train), "val": items(held)}


def write_shards(data: Optional[str], out: str | os.PathLike, *, shard_bytes: int, resize: Optional[int] = None,
                 workers: int = 1, val_fraction: float = 0.2, say: Callable[[str], None] = print) -> dict:
    """Writes every split of ``data`` as shards under ``out`` and ``out/index.json`` last (a folder without its
    index is not a finished shard set); returns the index."""
    from . import embedded

    out = Path(out)
    if data is None or data in embedded.NAMES:
        names, splits = embedded_items(data or "fashion-mnist-subset")
        source = data or "fashion-mnist-subset"
    else:
        root = Path(data)
        if not root.is_dir():
            raise UserError(f"{printable(root)} is not a folder of images (DIR/train/<class>/... or DIR/<class>/...)")
        names, splits = folder_items(root, val_fraction)
        source = printable(root)
    if len(names) < 1:
        raise UserError(f"{source} has no class folders")
    ensure_dir(out)
    index = {"format": FORMAT, "version": VERSION, "source": source, "classes": names, "resize": resize,
             "shard_bytes": shard_bytes}
    index["splits"] = {split: write_split(items, out, split, shard_bytes=shard_bytes, resize=resize, workers=workers,
                                          say=say) for split, items in splits.items()}
    atomic_write_text(out / INDEX, json.dumps(index, indent=1) + "\n")
    return index


# --- Reading -----------------------------------------------------------------------------------------------------

def is_shard_set(data: Optional[str]) -> bool:
    """A local shard folder (or its index.json), or a remote set: an http(s) URL or a pipe: template."""
    return data is not None and (is_remote(data) or Path(data).name == INDEX or (Path(data) / INDEX).is_file())


@dataclass
class ShardSet:
    root: str  # the folder, URL or pipe: template the index's shard files are relative to
    index: dict
    remote: bool = False

    @property
    def classes(self) -> list[str]:
        return list(self.index["classes"])

    def count(self, split: str) -> int:
        return int(self._split(split)["count"])

    def urls(self, split: str) -> list[str]:
        """What WebDataset opens: local paths, URLs, or pipe: commands."""
        return [locate(self.root, s["file"]) if self.remote else f"{self.root}/{s['file']}"
                for s in self._split(split)["shards"]]

    def sizes(self, split: str) -> dict[str, int]:
        """url -> the bytes the index declares for it (a reader goes no further)."""
        return {url: s.get("bytes") for url, s in zip(self.urls(split), self._split(split)["shards"])}

    def local_paths(self, split: str) -> list[str]:
        """Paths to read by offset: the shards themselves, or a remote set's copies staged in the cache."""
        return stage(self.root, self._split(split)["shards"]) if self.remote else self.urls(split)

    def _split(self, split: str) -> dict:
        if split not in self.index["splits"]:
            raise UserError(f"{self.root}/{INDEX} has no {split!r} split (it has: {', '.join(self.index['splits'])})")
        return self.index["splits"][split]


def open_shard_set(data: str) -> ShardSet:
    """The shard set of ``data`` (its folder or its index.json; a URL; a pipe: template), with the index checked."""
    if is_remote(data):
        root = root_of(data)
        index_path = locate(root, INDEX)
        raw = read_remote(index_path, limit=INDEX_MAX_BYTES)
    else:
        path = Path(data)
        index_path = path if path.name == INDEX else path / INDEX
        root = str(index_path.parent)
        try:
            raw = read_bounded(index_path, limit=INDEX_MAX_BYTES)
        except Unreadable as e:
            raise UserError(str(e)) from None
    try:
        index = json.loads(raw)
    except ValueError as e:
        raise UserError(f"{printable(index_path)} is not JSON: {e}") from None
    ok = (isinstance(index, dict) and index.get("format") == FORMAT and index.get("version") == VERSION
          and isinstance(index.get("classes"), list) and isinstance(index.get("splits"), dict))
    if not ok:
        raise UserError(f"{printable(index_path)} is not a googlenet shard index (format {FORMAT} v{VERSION})")
    for split, entry in index["splits"].items():
        files = [s.get("file", "") for s in entry.get("shards", [])]
        if any(not isinstance(f, str) or f.startswith("/") or ".." in Path(f).parts for f in files):
            raise UserError(f"{printable(index_path)}: a shard of {split!r} points outside the shard folder")
        if sum(int(s.get("count", 0)) for s in entry.get("shards", [])) != int(entry.get("count", -1)):
            raise UserError(f"{printable(index_path)}: the shard counts of {split!r} do not add up to its count")
    if is_remote(data):  # every name the index gives must be safe to put into a URL or a command
        for entry in index["splits"].values():
            for s in entry.get("shards", []):
                locate(root, s.get("file", ""))
    return ShardSet(root, index, remote=is_remote(data))


def transformed(data: bytes, transform: Optional[Callable]):
    """An image file's bytes through ``transform``: the fast decoder takes the bytes (it decodes only what it
    crops), any other transform the decoded 3 x H x W uint8 image; no transform, the image itself."""
    if hasattr(transform, "from_bytes"):
        return transform.from_bytes(data)
    image = decode_image_bytes(data)
    return transform(image) if transform is not None else image


def _decode_sample(sample: dict, transform: Callable, n_classes: int):
    """A WebDataset sample dict -> (image, label) through ``transform``, or a Skipped for a bad one."""
    key = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
    ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
    try:
        label = int(sample["cls"])
    except (KeyError, ValueError):
        return Skipped(key, "no class label (.cls)")
    if ext is None or not 0 <= label < n_classes:
        return Skipped(key, "no image" if ext is None else f"class {label} outside 0..{n_classes - 1}")
    try:
        image = transformed(sample[ext], transform)
    except BadImage as e:
        return Skipped(key, str(e))
    return image, label


class TrainStream(torch.utils.data.IterableDataset):
    """Resampled shards -> a seeded shuffle buffer -> decoded, transformed samples; endless (the caller takes the
    epoch's steps). ``seed`` (the epoch's and rank's) and the worker fix the shard draw and the shuffle; each
    sample's augmentation is seeded by its position in the stream."""

    def __init__(self, shards: ShardSet, split: str, transform: Callable, *, seed: int, skip: int = 0,
                 buffer: int = 1000) -> None:
        self.urls, self.transform, self.n_classes = shards.urls(split), transform, len(shards.classes)
        self.sizes = shards.sizes(split)
        self.seed, self.skip, self.buffer = seed, skip, buffer

    def __iter__(self) -> Iterator:
        import webdataset as wds

        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        stream = (self.seed * 64 + worker) % (1 << 63)  # seed: the epoch's and rank's (train.data.mix)
        pipeline = wds.DataPipeline(
            wds.ResampledShards(self.urls, seed=stream, worker_seed=lambda: 0, deterministic=True),
            functools.partial(open_bounded, sizes=self.sizes),  # webdataset's url_opener, bounded
            wds.tariterators.tar_file_expander,
            wds.tariterators.group_by_keys,
            wds.shuffle(self.buffer, initial=min(self.buffer, 100), rng=random.Random(stream)))
        # The loader takes samples from its workers in turn, so sample n of the whole stream is this worker's
        # n // workers: skipping the first ``skip`` of the stream is skipping this worker's share, undecoded.
        mine = max(0, -(-(self.skip - worker) // workers))
        samples = iter(pipeline)
        for n in itertools.count():
            try:
                sample = next(samples)
            except (OSError, ValueError, tarfile.TarError) as e:  # a shard that cannot be fetched or is no tar
                yield StreamFailed(f"reading the training shards failed: {transfer_error(e)}")
                return
            if n >= mine:
                torch.manual_seed((stream * 1_000_003 + n) % (1 << 63))  # the augmentation, from the position
                yield _decode_sample(sample, self.transform, self.n_classes)


@dataclass(frozen=True)
class StreamFailed:
    """Yielded by a loader worker in place of a sample when the stream broke: the main process raises it as one
    line (an exception raised in the worker would reach the user wrapped in the worker's traceback)."""
    message: str


class ShardImages(torch.utils.data.Dataset):
    """Random access to a split of local shards (evaluation, and training with ``--shard-read index``): the tar
    headers are read once (a seek per member, not a read of the images), then item i is one bounded read at its
    offset. Items are ``(3 x H x W uint8, label)`` (through ``transform`` when given) or a ``Skipped``, like an
    ImageFolder's, so evaluation's exact-once split across ranks, its crops and training's plan apply unchanged."""

    def __init__(self, shards: ShardSet, split: str, transform: Optional[Callable] = None) -> None:
        from ..fileio import max_image_bytes

        self.transform, self.n_classes = transform, len(shards.classes)
        self.items: list[tuple[str, int, int, str, int]] = []  # (shard, offset, size, key, label)
        limit = max_image_bytes()
        for url in shards.local_paths(split):
            images, labels = {}, {}
            try:
                with tarfile.open(url, "r:") as tar:
                    for m in tar:
                        stem, _, ext = m.name.rpartition(".")
                        if ext in IMAGE_EXTENSIONS and m.isfile():
                            images[stem] = (m.offset_data, m.size)
                        elif ext == "cls" and m.isfile() and m.size < 32:
                            labels[stem] = tar.extractfile(m).read()
            except (OSError, tarfile.TarError) as e:
                raise UserError(f"{printable(url)} is not a readable tar shard: {e}") from None
            for stem, (offset, size) in images.items():
                label = labels.get(stem, b"")
                ok = label.strip().isdigit() and int(label) < self.n_classes and size <= limit
                self.items.append((url, offset, size if ok else -1, stem, int(label) if ok else -1))
        self.targets = torch.tensor([i[4] for i in self.items], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        url, offset, size, key, label = self.items[index]
        if size < 0:
            return Skipped(f"{url}:{key}", "no valid class label, or the image is over the size limit")
        try:
            with open(url, "rb") as f:
                f.seek(offset)
                data = f.read(size)
            return transformed(data, self.transform), label
        except (OSError, BadImage) as e:
            return Skipped(f"{url}:{key}", str(e))
