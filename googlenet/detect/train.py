"""Training the paper's R-CNN detector: proposals for the training images, (MultiBox,) fine-tuning the region
classifier on warped windows, then the SVMs on its features. The CLI (cli/detect_train.py) calls ``train_rcnn``."""

from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np
import torch

from ..errors import UserError
from .data import DetectionSet, load_rgb
from .detector import RCNNDetector
from .recipe import DetectRecipe
from .rcnn import TrainImage, finetune, fit_svms


def build_classifier(recipe: DetectRecipe, num_classes: int, init: Optional[str]):
    """The region classifier with an (N + 1)-way head, and its preprocessing: fresh (``init`` None or "none"),
    or from a weights file / named source (its own preprocessing; its arch wins over the recipe's)."""
    from ..models import create_model
    from ..weights import default_preprocessing

    if init in (None, "none"):
        torch.manual_seed(recipe.seed)
        model = create_model(recipe.arch, num_classes=num_classes + 1, aux_logits=False)
        return model, default_preprocessing(recipe.warp)
    from ..finetune import init_preprocessing, load_init

    pre = dict(init_preprocessing(init))
    model = load_init(init)
    model.reset_classifier(num_classes + 1)
    pre["input_size"] = recipe.warp
    return model, pre


def training_images(dset: DetectionSet, recipe: DetectRecipe, multibox=None,
                    log: Callable[[str], None] = print) -> list[TrainImage]:
    from .proposals import propose

    t0, out = time.perf_counter(), []
    for img in dset.images:
        rgb = load_rgb(img)
        props = propose(rgb, recipe.proposals, recipe.train_proposals, multibox)
        out.append(TrainImage(rgb, props, img.boxes[~img.difficult], img.labels[~img.difficult]))
    n = np.mean([len(d.proposals) for d in out]) if out else 0
    log(f"proposals ({recipe.proposals}) for {len(out)} training images: {n:.0f} an image, "
        f"{time.perf_counter() - t0:.0f} s")
    return out


def train_rcnn(train_set: DetectionSet, recipe: DetectRecipe, init: Optional[str] = None,
               log: Callable[[str], None] = print) -> RCNNDetector:
    if not train_set.images:
        raise UserError("the training split has no images")
    torch.manual_seed(recipe.seed)
    t_start = time.perf_counter()
    n = len(train_set.classes)
    multibox = None
    if "multibox" in recipe.proposals:
        from .multibox import train_multibox

        multibox = train_multibox(train_set, recipe, log)
    data = training_images(train_set, recipe, multibox, log)
    model, pre = build_classifier(recipe, n, init)
    model = model.to(memory_format=torch.channels_last)
    ft = finetune(model, pre, data, recipe, log)
    svms = fit_svms(model, pre, data, recipe, n, log)
    model = model.to(memory_format=torch.contiguous_format)
    training = {"finetune": ft, "init": init or "none", "train_images": len(data), "data": train_set.name,
                "seconds": time.perf_counter() - t_start}
    return RCNNDetector(model, train_set.classes, pre, recipe, svms, multibox, {"training": training})
