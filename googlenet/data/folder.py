"""ImageFolder datasets (``DIR/<class>/...``) that never stop on a bad file.

A file that cannot be decoded is skipped, not fatal: the dataset yields a marker instead of a sample, the collate
function drops it and passes its path and reason on, and the caller reports the count and names at the end. This
works the same with worker processes, since the report travels inside the batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch.utils.data import Dataset

from ..errors import UserError
from .images import BadImage, load_image


def printable(path: str | os.PathLike) -> str:
    """A path as text that can always be printed or put in JSON (non-UTF-8 bytes become \\xNN escapes)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Sample:
    path: str
    label: int


@dataclass(frozen=True)
class Skipped:
    """A file that was not used, and why."""

    path: str
    reason: str

    def as_dict(self) -> dict:
        return {"file": printable(self.path), "error": self.reason}


def find_split(root: str | os.PathLike, split: str) -> Path:
    """``root/split`` when it exists (the ImageNet layout), else ``root`` itself."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"data folder not found: {printable(root)}")
    if not root.is_dir():
        raise UserError(f"not a folder: {printable(root)}")
    return root / split if (root / split).is_dir() else root


def _visible(entry: os.DirEntry) -> bool:
    return not entry.name.startswith(".")


def scan_classes(root: str | os.PathLike) -> list[str]:
    """Class folder names under ``root``, sorted (the label order, as torchvision's ImageFolder)."""
    root = Path(root)
    try:
        with os.scandir(root) as it:
            names = sorted(e.name for e in it if _visible(e) and e.is_dir())
    except OSError as e:
        raise UserError(f"cannot read folder {printable(root)}: {e.strerror or e}") from None
    if not names:
        raise UserError(f"{printable(root)} has no class folders (expected {printable(root)}/<class>/<image>)")
    return names


def scan_files(folder: str | os.PathLike) -> list[str]:
    """Every visible regular file under ``folder``, recursively, sorted. Non-images are kept, to be reported."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith("."))
    return out


def scan_image_folder(root: str | os.PathLike,
                      class_names: Optional[Sequence[str]] = None) -> tuple[list[Sample], list[str]]:
    """Samples of ``root/<class>/...`` and the class names. With ``class_names`` (a model's), labels follow those
    names, and a folder class the model does not know is an error."""
    found = scan_classes(root)
    if class_names is None:
        class_names = found
        index = {c: i for i, c in enumerate(found)}
    else:
        class_names = list(class_names)
        index = {c: i for i, c in enumerate(class_names)}
        unknown = [c for c in found if c not in index]
        if unknown:
            raise UserError(f"{len(unknown)} class folder(s) of {printable(root)} are not classes of the model "
                            f"(e.g. {printable(unknown[0])!r}); the model knows {len(class_names)} classes")
    samples = [Sample(path, index[c]) for c in found for path in scan_files(Path(root) / c)]
    if not samples:
        raise UserError(f"no files found under {printable(root)}")
    return samples, list(class_names)


class ImageFolderDataset(Dataset):
    """Decodes ``samples`` with ``transform``; yields ``(image, label)`` or a ``Skipped`` for a bad file.

    ``load`` turns a path into an image; by default ``load_image``. The fast training path
    (``googlenet.data.fast.train_transform``) decodes and crops in one step from the path, so it is passed as
    ``load`` (with no ``transform``).
    """

    def __init__(self, samples: Sequence[Sample], transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 *, draft_size: Optional[tuple[int, int]] = None,
                 load: Optional[Callable[[str], torch.Tensor]] = None) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.draft_size = draft_size
        self.load = load

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        s = self.samples[index]
        try:
            img = self.load(s.path) if self.load else load_image(s.path, draft_size=self.draft_size)
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
    images = torch.stack([g[0] for g in good])
    labels = torch.as_tensor([g[1] for g in good], dtype=torch.long)
    return images, labels, skipped
