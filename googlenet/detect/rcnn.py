"""The paper's region classifier: a GoogLeNet fine-tuned on warped proposals, then R-CNN's per-class linear SVMs.

Girshick et al. 2014, as GoogLeNet's detection entry used it (the paper, section 7): class-agnostic proposals, each
warped with context (warp.py) and classified by the network; no bounding-box regression, no context model.

Fine-tuning (R-CNN section 2.3): the classifier's last layer is replaced by an (N + 1)-way one (background is
class 0); a proposal whose IoU with a ground-truth box is >= 0.5 is a positive of that box's class, every other
proposal is background; the ground-truth boxes themselves are positives too; each SGD batch samples 32 positive
windows and 96 background ones uniformly over all training windows; the new layer learns 10x faster; windows are
mirrored at random. Then the SVM stage (svm.py) on the fine-tuned network's pooled 1024-d features, and at test time
per-class greedy NMS at IoU 0.3 keeping at most 100 boxes per class.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn
from torchvision.ops import batched_nms, box_iou

from ..data.transforms import model_input
from ..errors import UserError
from .recipe import DetectRecipe
from .svm import LinearSVMs, train_svms
from .warp import warp_regions


@dataclass
class TrainImage:
    rgb: np.ndarray  # (H, W, 3) uint8
    proposals: np.ndarray  # (P, 4) float32
    boxes: np.ndarray  # (G, 4) ground truth
    labels: np.ndarray  # (G,) class indices 0..N-1


def image_tensor(rgb: np.ndarray, pre: dict) -> torch.Tensor:
    """(3, H, W) float: the whole image under the model's preprocessing, so that a warp's zero fill is the mean."""
    return model_input(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None], pre)[0]


def label_windows(proposals: np.ndarray, boxes: np.ndarray, labels: np.ndarray, fg_iou: float):
    """Windows for fine-tuning: the proposals plus the ground-truth boxes; the label of each is 1 + the class of the
    box it overlaps most if that IoU >= fg_iou, else 0 (background). Returns (windows (W, 4), labels (W,),
    max IoU (W,))."""
    windows = np.concatenate([boxes.astype(np.float32).reshape(-1, 4), proposals.astype(np.float32).reshape(-1, 4)])
    if len(boxes) == 0:
        return windows, np.zeros(len(windows), np.int64), np.zeros(len(windows), np.float32)
    iou = box_iou(torch.from_numpy(windows), torch.from_numpy(boxes.astype(np.float32))).numpy()
    best, arg = iou.max(1), iou.argmax(1)
    cls = np.where(best >= fg_iou, labels[arg] + 1, 0).astype(np.int64)
    return windows, cls, best.astype(np.float32)


def param_groups(model: nn.Module, recipe: DetectRecipe) -> list[dict]:
    """Two groups: the trunk at lr, the new (N + 1)-way layer at lr x head_lr_mult (R-CNN's 10x). The aux heads
    are not used by detection and are left out."""
    head = list(model.fc.parameters())
    head_ids = {id(p) for p in head}
    aux_ids = {id(p) for name in ("aux1", "aux2") if getattr(model, name, None) is not None
               for p in getattr(model, name).parameters()}
    trunk = [p for p in model.parameters() if id(p) not in head_ids | aux_ids]
    return [{"params": trunk, "lr": recipe.lr, "name": "trunk"},
            {"params": head, "lr": recipe.lr * recipe.head_lr_mult, "name": "head"}]


def sample_batch(rng: np.random.Generator, positives: np.ndarray, background: np.ndarray,
                 recipe: DetectRecipe) -> np.ndarray:
    """Indices of one batch: batch_positives positives and batch_background background windows, each drawn
    uniformly (with replacement only where a pool is smaller than its share)."""
    pos = rng.choice(positives, recipe.batch_positives, replace=len(positives) < recipe.batch_positives)
    bg = (rng.choice(background, recipe.batch_background, replace=len(background) < recipe.batch_background)
          if len(background) else np.zeros(0, np.int64))
    return np.concatenate([pos, bg])


def warp_windows(images: list[torch.Tensor], owner: np.ndarray, windows: np.ndarray, recipe: DetectRecipe) -> torch.Tensor:
    """Warps of windows (W, 4) from images[owner[k]] (normalised (3, H, W) tensors), in the given order."""
    out = torch.empty(len(windows), 3, recipe.warp, recipe.warp)
    for i in np.unique(owner):
        sel = np.nonzero(owner == i)[0]
        out[torch.from_numpy(sel)] = warp_regions(images[i], windows[sel], recipe.warp, recipe.context)
    return out


def finetune(model: nn.Module, pre: dict, data: list[TrainImage], recipe: DetectRecipe,
             log: Callable[[str], None] = print) -> dict:
    """Fine-tunes ``model`` (its fc already N + 1-way) on warped windows of ``data``; returns loss/accuracy figures."""
    labelled = [label_windows(d.proposals, d.boxes, d.labels, recipe.fg_iou) for d in data]
    windows, labels = np.concatenate([w for w, _, _ in labelled]), np.concatenate([c for _, c, _ in labelled])
    owner = np.concatenate([np.full(len(w), i) for i, (w, _, _) in enumerate(labelled)])
    positives, background = np.nonzero(labels > 0)[0], np.nonzero(labels == 0)[0]
    if len(positives) == 0:
        raise UserError("no training window overlaps a ground-truth box: the data has no objects")
    log(f"fine-tuning on {len(positives)} positive and {len(background)} background windows "
        f"({recipe.iterations} batches of {recipe.batch_positives} + {recipe.batch_background}, "
        f"{recipe.warp} px warps)")
    images = [image_tensor(d.rgb, pre) for d in data]
    groups = param_groups(model, recipe)
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)
    # R-CNN steps the lr down 10x once; a cosine decay to 0 does the same job over a short run.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, recipe.iterations) / recipe.iterations)))
    rng = np.random.default_rng(recipe.seed)
    model.train()
    t0, history = time.perf_counter(), []
    for step in range(recipe.iterations):
        idx = sample_batch(rng, positives, background, recipe)
        x = warp_windows(images, owner[idx], windows[idx], recipe)
        if recipe.mirror:
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            x[flip] = x[flip].flip(-1)
        y = torch.from_numpy(labels[idx])
        logits = model(x.contiguous(memory_format=torch.channels_last))
        loss = nn.functional.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append((loss.item(), (logits.detach().argmax(1) == y).float().mean().item()))
        if (step + 1) % max(1, recipe.iterations // 10) == 0 or step + 1 == recipe.iterations:
            recent = history[-max(1, recipe.iterations // 10):]
            log(f"  step {step + 1}/{recipe.iterations}: loss {np.mean([h[0] for h in recent]):.3f}, "
                f"window accuracy {np.mean([h[1] for h in recent]):.3f} ({time.perf_counter() - t0:.0f} s)")
    model.eval()
    first = history[: max(1, len(history) // 10)]
    last = history[-max(1, len(history) // 10):]
    return {"first_loss": float(np.mean([h[0] for h in first])), "last_loss": float(np.mean([h[0] for h in last])),
            "last_accuracy": float(np.mean([h[1] for h in last])), "seconds": time.perf_counter() - t0,
            "positives": int(len(positives)), "background": int(len(background))}


@torch.inference_mode()
def region_outputs(model: nn.Module, image: torch.Tensor, boxes: np.ndarray, recipe: DetectRecipe):
    """(features (N, 1024), logits (N, N + 1)) of the warped ``boxes`` of one normalised image, in eval mode."""
    feats, logits = [], []
    for s in range(0, len(boxes), recipe.batch_size):
        x = warp_regions(image, boxes[s:s + recipe.batch_size], recipe.warp, recipe.context)
        f = model.forward_features(x.contiguous(memory_format=torch.channels_last)).logits
        feats.append(f)
        logits.append(model.forward_head(f))
    if not feats:
        return torch.zeros(0, 1024), torch.zeros(0, model.num_classes)
    return torch.cat(feats), torch.cat(logits)


def svm_training_features(model: nn.Module, pre: dict, data: list[TrainImage], recipe: DetectRecipe,
                          num_classes: int, log: Callable[[str], None] = print):
    """R-CNN's SVM training sets: per class, the features of its ground-truth boxes (positives) and of every
    proposal with IoU < svm_negative_iou to all of that class's boxes (negatives)."""
    pos = [[] for _ in range(num_classes)]
    neg = [[] for _ in range(num_classes)]
    t0 = time.perf_counter()
    for d in data:
        image = image_tensor(d.rgb, pre)
        gt = d.boxes.astype(np.float32).reshape(-1, 4)
        feats, _ = region_outputs(model, image, np.concatenate([gt, d.proposals]), recipe)
        gt_f, prop_f = feats[: len(gt)], feats[len(gt):]
        iou = (box_iou(torch.from_numpy(d.proposals), torch.from_numpy(gt)) if len(gt) and len(d.proposals)
               else torch.zeros(len(d.proposals), len(gt)))
        for c in range(num_classes):
            mine = torch.from_numpy(d.labels == c)
            pos[c].append(gt_f[mine])
            worst = iou[:, mine].max(1).values if bool(mine.any()) else torch.zeros(len(d.proposals))
            neg[c].append(prop_f[worst < recipe.svm_negative_iou])
    log(f"SVM features of {len(data)} images in {time.perf_counter() - t0:.0f} s")
    return [torch.cat(p) for p in pos], [torch.cat(n) for n in neg]


def fit_svms(model, pre, data, recipe, num_classes, log=print) -> LinearSVMs:
    pos, neg = svm_training_features(model, pre, data, recipe, num_classes, log)
    t0 = time.perf_counter()
    svms = train_svms(pos, neg, rounds=recipe.svm_rounds, c=recipe.svm_c)
    log(f"{num_classes} linear SVMs ({sum(map(len, pos))} positives, {sum(map(len, neg))} negatives, "
        f"{recipe.svm_rounds} mining rounds) in {time.perf_counter() - t0:.1f} s")
    return svms


def class_scores(features: torch.Tensor, logits: torch.Tensor, svms: Optional[LinearSVMs], scoring: str) -> torch.Tensor:
    """(N, C) scores of the N regions for the C object classes: the SVMs', or the softmax over N + 1 classes
    without its background column."""
    if scoring == "svm":
        if svms is None:
            raise ValueError("svm scoring needs the SVMs")
        return svms.scores(features)
    return torch.softmax(logits, 1)[:, 1:]


def select_detections(boxes: np.ndarray, scores: torch.Tensor, recipe: DetectRecipe, threshold: float):
    """Per-class greedy NMS at recipe.nms_iou, at most recipe.max_per_class boxes per class, sorted by score:
    (boxes (K, 4) float32, labels (K,) int64, scores (K,) float32)."""
    n, c = scores.shape
    if n == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32)
    b = torch.from_numpy(np.ascontiguousarray(boxes, np.float32)).repeat_interleave(c, 0)
    s = scores.reshape(-1).float()
    lab = torch.arange(c).repeat(n)
    keep = s > threshold
    b, s, lab = b[keep], s[keep], lab[keep]
    kept = batched_nms(b, s, lab, recipe.nms_iou)  # sorted by score, all classes together
    kept = torch.cat([kept[lab[kept] == k][: recipe.max_per_class] for k in range(c)]) if c else kept
    kept = kept[torch.argsort(s[kept], descending=True)]
    return b[kept].numpy(), lab[kept].numpy().astype(np.int64), s[kept].numpy().astype(np.float32)
