"""ImageFolder datasets (``DIR/<class>/...``) that never stop on a bad file.

A file that cannot be decoded is skipped, not fatal: the dataset yields a marker instead of a sample, the collate
function drops it and passes its path and reason on, and the caller reports the count and names at the end. This
works the same with worker processes, since the report travels inside the batch.

Folders are walked by ``googlenet.data.scan`` (each real folder once, no cycles, each file once) and files are read
by ``googlenet.data.images.load_image`` (regular files only, bounded): see docs/safe-files.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch.utils.data import Dataset

from ..errors import UserError
from ..fileio import printable
from .images import BadImage, load_image
from .scan import Skipped, ancestors, scan_tree


@dataclass(frozen=True)
class Sample:
    path: str
    label: int
    skip: Optional[str] = None  # why the scan left this path out: the dataset yields it as Skipped, to be reported


def find_split(root: str | os.PathLike, split: str) -> Path:
    """``root/split`` when it exists (the ImageNet layout), else ``root`` itself."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"data folder not found: {printable(root)}")
    if not root.is_dir():
        raise UserError(f"not a folder: {printable(root)}")
    return root / split if (root / split).is_dir() else root


def class_folders(root: Path) -> tuple[list[str], list[Skipped]]:
    """Visible folders directly under ``root`` (links to folders included), sorted; a link that leads back to
    ``root`` or above it, or to a class folder already listed, is left out with its reason."""
    try:
        with os.scandir(root) as it:
            entries = sorted((e for e in it if not e.name.startswith(".") and e.is_dir()), key=lambda e: e.name)
    except OSError as e:
        raise UserError(f"cannot read folder {printable(root)}: {e.strerror or e}") from None
    enclosing = ancestors(root)
    by_key: dict[tuple[int, int], os.DirEntry] = {}
    skipped = []
    for e in entries:
        st = e.stat()  # follows the link: is_dir() above succeeded, so this does too
        key = (st.st_dev, st.st_ino)
        if key in enclosing:
            skipped.append(Skipped(e.path, f"link to a folder that contains it (a cycle): {printable(enclosing[key])}"))
        elif key in by_key and (not by_key[key].is_symlink() or e.is_symlink()):
            skipped.append(Skipped(e.path, f"link to a class folder already scanned: {printable(by_key[key].path)}"))
        else:
            if key in by_key:  # a link came first in name order; the real folder names the class
                skipped.append(Skipped(by_key[key].path,
                                       f"link to a class folder already scanned: {printable(e.path)}"))
            by_key[key] = e
    return sorted(e.name for e in by_key.values()), skipped


def scan_image_folder(root: str | os.PathLike,
                      class_names: Optional[Sequence[str]] = None) -> tuple[list[Sample], list[str]]:
    """Samples of ``root/<class>/...`` and the class names. With ``class_names`` (a model's), labels follow those
    names, and a folder class the model does not know is an error.

    What the scan leaves out (cycles, duplicates, dangling links, FIFOs, devices) comes back as samples with a
    ``skip`` reason, so that it is reported with the files that fail to decode, by every caller."""
    root = Path(root)
    found, left_out = class_folders(root)
    if not found:
        raise UserError(f"{printable(root)} has no class folders (expected {printable(root)}/<class>/<image>)")
    class_names = list(found if class_names is None else class_names)
    index = {c: i for i, c in enumerate(class_names)}
    if unknown := [c for c in found if c not in index]:  # none without class_names
        raise UserError(f"{len(unknown)} class folder(s) of {printable(root)} are not classes of the model "
                        f"(e.g. {printable(unknown[0])!r}); the model knows {len(class_names)} classes")
    files, skipped = scan_tree([root / c for c in found])
    samples = [Sample(f.path, index[found[f.root]]) for f in files]
    return with_left_out(root, samples, left_out + skipped), class_names


def with_left_out(root: str | os.PathLike, samples: list[Sample], left_out: list[Skipped]) -> list[Sample]:
    """``samples`` followed by what the scan left out, as samples with a ``skip`` reason; none at all is an error."""
    if not samples:
        first = f" ({len(left_out)} left out, e.g. {printable(left_out[0].path)}: {left_out[0].reason})" \
            if left_out else ""
        raise UserError(f"no files found under {printable(root)}{first}")
    return samples + [Sample(s.path, -1, skip=s.reason) for s in left_out]


class ImageFolderDataset(Dataset):
    """Decodes ``samples`` with ``transform``; yields ``(image, label)`` or a ``Skipped`` for a bad file.

    ``load`` turns a path into an image; by default ``load_image``. The fast training path
    (``googlenet.data.fast.train_transform``) decodes and crops in one step from the path, so it is passed as
    ``load`` (with no ``transform``).
    """

    def __init__(self, samples: Sequence[Sample], transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 *, load: Optional[Callable[[str], torch.Tensor]] = None) -> None:
        self.samples, self.transform, self.load = list(samples), transform, load

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        s = self.samples[index]
        if s.skip is not None:
            return Skipped(s.path, s.skip)
        try:
            img = self.load(s.path) if self.load else load_image(s.path)
            if self.transform is not None:
                img = self.transform(img)  # may refuse too (an image too elongated to resize)
        except BadImage as e:
            return Skipped(s.path, str(e))
        return img, s.label


def collate_skipping(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[Skipped]]:
    """Stacks the good samples of a batch; returns ``(images, labels, skipped)``. images may be empty (0 x ...)."""
    good = [b for b in batch if not isinstance(b, Skipped)]
    skipped = [b for b in batch if isinstance(b, Skipped)]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    return torch.stack([g[0] for g in good]), torch.as_tensor([g[1] for g in good], dtype=torch.long), skipped
