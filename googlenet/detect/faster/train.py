"""Training torchvision's FasterRCNN on a GoogLeNet trunk (model.py) from the project's detection readers.

The loop is torchvision's detection reference (references/detection/engine.py: the summed RPN + box losses, linear
warm-up from lr / 1000, then the schedule), written here because torchvision ships it as scripts, not as a library.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

import numpy as np
import torch

from ...errors import UserError
from ..data import DetectionSet, load_rgb
from .model import FasterRCNNDetector, build_faster_rcnn
from .recipe import FasterRecipe


class SceneDataset(torch.utils.data.Dataset):
    """(RGB 0..1 tensor 3 x H x W, target {"boxes", "labels"}) per image; labels are 1-based (0 is background) and
    difficult objects are left out, as torchvision's VOC reference does."""

    def __init__(self, dset: DetectionSet, mirror: bool, seed: int) -> None:
        self.images, self.mirror, self.seed = dset.images, mirror, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = self.images[i]
        x = torch.from_numpy(np.ascontiguousarray(load_rgb(img))).permute(2, 0, 1).float().div_(255)
        keep = ~img.difficult
        boxes = torch.from_numpy(img.boxes[keep].astype(np.float32)).reshape(-1, 4)
        labels = torch.from_numpy(img.labels[keep].astype(np.int64) + 1)
        # Mirror decided by (seed, epoch, index): the same run twice flips the same images, with any worker count.
        if self.mirror and np.random.default_rng((self.seed, self.epoch, i)).random() < 0.5:
            x = x.flip(-1)
            w = x.shape[-1]
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        return x, {"boxes": boxes, "labels": labels}


def _collate(batch):
    return tuple(zip(*batch))


def classifier_for(recipe: FasterRecipe, init: Optional[str]):
    """(the GoogLeNet whose trunk the detector takes over, whether it is pretrained): fresh ``recipe.arch`` with
    ImageNet preprocessing, or the ``--init`` source with its own preprocessing."""
    from ...models import create_model
    from ...weights import default_preprocessing

    if init in (None, "none"):
        torch.manual_seed(recipe.seed)
        model = create_model(recipe.arch, num_classes=1, aux_logits=False)
        model.preprocessing = default_preprocessing()
        return model, False
    from ...finetune import init_preprocessing, load_init

    model = load_init(init)
    model.preprocessing = dict(init_preprocessing(init))
    return model, True


def lr_factor(step: int, total: int, recipe: FasterRecipe) -> float:
    """Linear warm-up from 1/1000 over warmup_iters, then cosine to 0 or the references' x0.1 steps at 2/3, 8/9."""
    warm = min(recipe.warmup_iters, max(total - 1, 0))
    if step < warm:
        a = step / warm
        return 0.001 * (1 - a) + a
    if recipe.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))
    return 0.1 ** sum(step >= total * f for f in (2 / 3, 8 / 9))


def train_faster(train_set: DetectionSet, recipe: FasterRecipe, init: Optional[str] = None,
                 max_iterations: Optional[int] = None, log: Callable[[str], None] = print) -> FasterRCNNDetector:
    from ...models import arch_options

    if not train_set.images:
        raise UserError("the training split has no images")
    if recipe.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"recipe device {recipe.device} but no CUDA device is visible; pass --device cpu")
    try:
        device = torch.device(recipe.device)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {recipe.device!r}: cpu, cuda or cuda:N") from None
    torch.manual_seed(recipe.seed)
    classifier, pretrained = classifier_for(recipe, init)
    trunk_meta = {"arch": classifier.arch_name, "options": arch_options(classifier),
                  "preprocessing": dict(classifier.preprocessing), "frozen_bn": pretrained}
    model = build_faster_rcnn(classifier, recipe, len(train_set.classes), pretrained=pretrained).to(device)
    data = SceneDataset(train_set, recipe.mirror, recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    loader = torch.utils.data.DataLoader(data, batch_size=recipe.batch_size, shuffle=True, generator=gen,
                                         num_workers=recipe.workers, collate_fn=_collate, drop_last=False)
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    total = recipe.epochs * len(loader)
    if max_iterations is not None:
        total = min(total, max_iterations)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, recipe))
    log(f"Faster R-CNN ({recipe.trunk} on {classifier.arch_name}, {'pretrained' if pretrained else 'from scratch'}): "
        f"{len(data)} images, {total} steps of {recipe.batch_size}, {recipe.min_size}..{recipe.max_size} px")
    model.train()
    t0, step, history = time.perf_counter(), 0, []
    every = max(1, total // 10)
    while step < total:
        for images, targets in loader:
            images = [x.to(device) for x in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            losses = model(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise UserError(f"Faster R-CNN training diverged at step {step + 1} (loss {loss.item()}); "
                                f"lower the recipe's lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            history.append({k: v.item() for k, v in losses.items()})
            if step % every == 0 or step == total:
                recent = history[-every:]
                parts = ", ".join(f"{k.removeprefix('loss_')} {np.mean([h[k] for h in recent]):.3f}"
                                  for k in recent[0])
                log(f"  step {step}/{total}: {parts} ({time.perf_counter() - t0:.0f} s)")
            if step >= total:
                break
        data.epoch += 1
    model.eval()
    first, last = history[: every], history[-every:]
    training = {"steps": step, "seconds": time.perf_counter() - t0, "init": init or "none",
                "train_images": len(data), "data": train_set.name,
                "first_loss": float(np.mean([sum(h.values()) for h in first])),
                "last_loss": float(np.mean([sum(h.values()) for h in last]))}
    return FasterRCNNDetector(model.cpu(), train_set.classes, recipe, trunk_meta, {"training": training})
