"""``googlenet bench data``: JPEG decode + RandomResizedCrop + flip + normalise, per core.

Reference: torchvision's ImageFolder recipe (PIL open + convert("RGB"), RandomResizedCrop, RandomHorizontalFlip,
ToTensor, Normalize). Project: ``googlenet.data.fast.FastRandomResizedCrop``. The paper recipe's full
augmentation (random interpolation, ColorJitter, PCA lighting) is timed as well: ``googlenet.data.fast.FastPaperCrop``
against the same recipe written with torchvision's PIL transforms (the issue's "PIL recipe": what a torchvision
user would write) and against train's previous path (``load_image`` + ``transforms.paper_train_transform``).
All on one thread (per core), over JPEGs the benchmark writes to a temp folder: photo-like 500x375 images
(ImageNet's typical size) made of Fashion-MNIST garments upscaled onto smooth colour fields, quality 90. The same
JPEGs packed into WebDataset shards (as written, and pre-resized to a shorter side of 256) are read the way
``train --data SHARDS`` reads them in each loader worker.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .common import Contender, measure

REFERENCE = "torchvision ImageFolder recipe (PIL), 1 core"
PAPER_REFERENCE = "paper recipe, load_image (PIL) + paper_train_transform, 1 core"
PIL_PAPER_REFERENCE = "paper recipe, torchvision PIL transforms, 1 core"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_jpegs(folder: Path, n: int, size: tuple[int, int] = (500, 375), seed: int = 0) -> list[Path]:
    """``n`` JPEGs of ``size`` (width, height): a garment from the embedded Fashion-MNIST, upscaled and tinted, on a
    smooth random colour field (upsampled noise), so the files compress like photographs, not like noise."""
    from PIL import Image

    from ..data.embedded import load_fashion

    g = torch.Generator().manual_seed(seed)
    garments = load_fashion()[1].images  # held-out part: 2000 x 28 x 28
    width, height = size
    paths = []
    for i in range(n):
        field = F.interpolate(torch.rand(1, 3, 6, 8, generator=g), size=(height, width), mode="bicubic",
                              align_corners=False)[0].clamp(0, 1)
        side = int(height * (0.6 + 0.35 * torch.rand((), generator=g).item()))
        garment = F.interpolate(garments[i % len(garments)][None, None].float() / 255, size=(side, side),
                                mode="bilinear", align_corners=False)[0]
        tint = torch.rand(3, 1, 1, generator=g)
        top = int(torch.randint(0, height - side + 1, (), generator=g))
        left = int(torch.randint(0, width - side + 1, (), generator=g))
        patch = field[:, top:top + side, left:left + side]
        field[:, top:top + side, left:left + side] = patch * (1 - garment) + tint * garment
        grain = 0.03 * torch.randn(3, height, width, generator=g)  # sensor-like noise: realistic file sizes
        pixels = ((field + grain).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        path = folder / f"img_{i:04d}.jpg"
        Image.fromarray(np.ascontiguousarray(pixels)).save(path, quality=90)
        paths.append(path)
    return paths


def _pil_loaded(tf):
    """``tf`` applied to the image at a path, opened by torchvision's ImageFolder loader itself."""
    from torchvision.datasets.folder import pil_loader

    return lambda path: tf(pil_loader(path))


def reference_transform(size: int):
    from torchvision import transforms as T

    return _pil_loaded(T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                                  T.Normalize(MEAN, STD)]))


def pil_paper_transform(size: int):
    """The paper recipe as a torchvision user writes it on PIL images: RandomResizedCrop with an interpolation drawn
    from bilinear, box (area), nearest and bicubic, flip, ColorJitter(0.4, 0.4, 0.4) on the PIL image, ToTensor,
    AlexNet's PCA lighting, Normalize. PIL works on 8-bit pixels throughout, so its distribution is the float
    recipe's rounded to 1/255 at each step; it serves here as a speed reference only."""
    from torchvision import transforms as T

    from ..data.transforms import Lighting

    modes = (T.InterpolationMode.BILINEAR, T.InterpolationMode.BOX, T.InterpolationMode.NEAREST,
             T.InterpolationMode.BICUBIC)
    return _pil_loaded(T.Compose([T.RandomChoice([T.RandomResizedCrop(size, interpolation=m) for m in modes]),
                                  T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4), T.ToTensor(), Lighting(0.1),
                                  T.Normalize(MEAN, STD)]))


SHARDS_NOTE = "a persistent TrainStream (tar read + shuffle buffer + FastPaperCrop.from_bytes), in-process"


def shard_stream(folder: Path, out: Path, input_size: int, resize) -> Iterator:
    """An endless stream of training samples from ``folder`` packed into shards at ``out`` (shorter side shrunk to
    ``resize`` when given): the path ``train --data SHARDS`` runs in each loader worker."""
    from ..data.fast import FastPaperCrop
    from ..data.shards import TrainStream, open_shard_set, write_shards

    write_shards(str(folder), out, shard_bytes=4 << 20, resize=resize, say=lambda _: None)
    return iter(TrainStream(open_shard_set(str(out)), "train", FastPaperCrop(input_size, MEAN, STD), seed=0, buffer=64))


def bench_data(*, input_size: int = 224, files: int = 64, rounds: int = 5, image_size=(500, 375),
               progress=None) -> tuple[list[dict], list[str]]:
    from ..data.fast import FastPaperCrop, train_transform
    from ..data.images import load_image
    from ..data.transforms import paper_train_transform

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per core: a DataLoader worker runs one thread
    try:
        with tempfile.TemporaryDirectory(prefix="googlenet-bench-") as tmp:
            folder = Path(tmp) / "folder"
            (folder / "train" / "all").mkdir(parents=True)
            paths = make_jpegs(folder / "train" / "all", files, image_size)
            plain = shard_stream(folder, Path(tmp) / "shards", input_size, None)
            small = shard_stream(folder, Path(tmp) / "shards256", input_size, 256)
            ref, fast = reference_transform(input_size), train_transform(input_size, MEAN, STD)
            paper, fast_paper = paper_train_transform(input_size, MEAN, STD), FastPaperCrop(input_size, MEAN, STD)
            pil_paper = pil_paper_transform(input_size)
            note = f"{files} JPEGs {image_size[0]}x{image_size[1]} per round, output {input_size}x{input_size}"
            runs = [(REFERENCE, "reference", lambda: [ref(p) for p in paths], note),
                    ("googlenet.data.fast, 1 core", "project", lambda: [fast(p) for p in paths], note),
                    (PIL_PAPER_REFERENCE, "reference", lambda: [pil_paper(p) for p in paths], note),
                    (PAPER_REFERENCE, "reference", lambda: [paper(load_image(p)) for p in paths], note),
                    ("paper recipe, googlenet.data.fast.FastPaperCrop, 1 core", "project",
                     lambda: [fast_paper(p) for p in paths], note),
                    ("paper recipe, FastPaperCrop from WebDataset shards, 1 core", "project",
                     lambda: [next(plain) for _ in paths], SHARDS_NOTE),
                    ("paper recipe, FastPaperCrop from shards pre-resized to 256, 1 core", "project",
                     lambda: [next(small) for _ in paths], SHARDS_NOTE)]
            contenders = [Contender(name, role, "fp32", files, run, extra={"note": n}) for name, role, run, n in runs]
            rows = measure(contenders, rounds, REFERENCE, PIL_PAPER_REFERENCE, PAPER_REFERENCE, progress=progress)
    finally:
        torch.set_num_threads(threads)
    return rows, [f"goal: project >= 1.3x {REFERENCE}", f"goal: FastPaperCrop >= 1.3x {PIL_PAPER_REFERENCE}",
                  f"also: FastPaperCrop against train's previous path, {PAPER_REFERENCE}"]
