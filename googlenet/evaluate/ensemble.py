"""Crops of images through one or more models: softmax averaged over crops, then over models (paper section 7).

``CropDataset`` turns any source of 3 x H x W uint8 images into the crops every model needs (cut once per distinct
geometry, so an ensemble of models trained alike shares them); ``Ensemble`` turns them into each model's own input
(``model_input``: pixel scale, channel order, mean/std) and batches them through ``optimize_for_inference``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..data.folder import Skipped
from ..data.images import BadImage
from ..data.transforms import model_input
from ..errors import UserError
from .crops import check_scheme, crop_boxes, default_resize, interpolation_mode, make_crops


@dataclass(frozen=True)
class View:
    """How the crops of one scheme are cut for one model (its preprocessing decides size and interpolation)."""

    scheme: str
    crop_size: int
    resize_size: int
    interpolation: str

    def crops(self, image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        boxes = crop_boxes(width, height, self.scheme, crop_size=self.crop_size, resize_size=self.resize_size)
        return make_crops(image, boxes, interpolation=interpolation_mode(self.interpolation))


def view_for(model: nn.Module, scheme: str) -> View:
    pre = model.preprocessing
    size = int(pre.get("input_size", 224))
    return View(check_scheme(scheme), size, int(pre.get("resize_size") or default_resize(size)),
                str(pre.get("interpolation", "bilinear")))


class ArrayImages(Dataset):
    """An in-memory N x H x W (grayscale) or N x 3 x H x W uint8 tensor as (3 x H x W image, label) items."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = self.images[i]
        if img.dim() == 2:  # Fashion-MNIST is grayscale; the network takes 3 channels
            img = img.unsqueeze(0).expand(3, -1, -1)
        return img, int(self.labels[i])


class CropDataset(Dataset):
    """``base[indices[i]]`` -> ``(index, label, {view: N x 3 x S x S uint8})``, or a ``Skipped`` for a bad file."""

    def __init__(self, base: Any, indices: Sequence[int], views: Sequence[View]) -> None:
        self.base, self.indices, self.views = base, list(indices), list(dict.fromkeys(views))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        item = self.base[index]
        if isinstance(item, Skipped):
            return item
        image, label = item
        try:
            return index, label, {v: v.crops(image) for v in self.views}
        except BadImage as e:  # decodable, but no crop can be cut from it (extreme aspect ratio)
            samples = getattr(self.base, "samples", None)
            return Skipped(samples[index].path if samples else f"image {index}", str(e))


def collate_list(batch: list) -> list:
    return batch


class Ensemble:
    """Models that must agree on their classes; ``probs`` gives each model's crop-averaged softmax."""

    def __init__(self, models: Sequence[nn.Module], *, precision: str = "fp32", backend: str = "eager",
                 names: Sequence[str] = ()) -> None:
        from ..inference import optimize_for_inference

        if not models:
            raise UserError("no models given")
        names = list(names) or [f"model {i + 1}" for i in range(len(models))]
        first = models[0]
        for name, m in zip(names[1:], models[1:]):
            if m.num_classes != first.num_classes:
                raise UserError(f"models of an ensemble must share their classes: {names[0]} has "
                                f"{first.num_classes}, {name} has {m.num_classes}")
            if m.class_names != first.class_names:
                raise UserError(f"models of an ensemble must share their class names: {names[0]} and {name} differ")
        self.models = list(models)
        self.num_classes = int(first.num_classes)
        self.class_names = first.class_names
        self.predictors = [optimize_for_inference(m, precision=precision, backend=backend) for m in models]
        self.preprocessing = [dict(m.preprocessing) for m in models]

    def views(self, scheme: str) -> list[View]:
        return [view_for(m, scheme) for m in self.models]

    def probs(self, items: list, scheme: str, batch_size: int) -> Tensor:
        """items: CropDataset outputs -> n_models x n_images x classes, each the mean softmax over the crops."""
        out = []
        for view, predictor, pre in zip(self.views(scheme), self.predictors, self.preprocessing):
            crops = torch.cat([item[2][view] for item in items])  # (n_images * n_crops) x 3 x S x S uint8
            chunks = []
            for start in range(0, len(crops), batch_size):
                x = model_input(crops[start:start + batch_size], pre)  # scale, channel order, mean/std: once
                chunks.append(torch.softmax(predictor(x).float(), dim=1))
            out.append(torch.cat(chunks).view(len(items), len(crops) // len(items), -1).mean(dim=1))
        return torch.stack(out)


def topk_correct(probs: Tensor, labels: Tensor, k: int) -> Tensor:
    """Per image: 1 when the label is among the ``k`` most probable classes (k clamped to the class count)."""
    k = min(k, probs.shape[-1])
    return (probs.topk(k, dim=-1).indices == labels.unsqueeze(-1)).any(dim=-1)
