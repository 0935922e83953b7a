"""Detection recipes: YAML presets beside this file (``cpu``, ``paper``), overridden by flags, checked once.

The paper's recipe (``paper.yaml``) is R-CNN's on a GPU: 224 px warps with 16 px of context, ~2000 proposals an
image (here the doubled-superpixel selective search plus MultiBox), SGD at lr 0.001 with the new layer at 10x,
batches of 32 positives + 96 background. ``cpu.yaml`` is the same code at laptop scale (64 px warps, fewer
proposals and iterations) so that the main detection job finishes in minutes on two cores.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from ..errors import UserError
from .proposals import METHODS

RECIPE_DIR = Path(__file__).parent


@dataclass
class DetectRecipe:
    name: str = "cpu"
    arch: str = "googlenet"  # the region classifier: any project arch (the paper's net by default)
    warp: int = 64  # the network's input side for a warped region (R-CNN: 227, GoogLeNet: 224)
    context: int = 5  # pixels of surround at the warped size (R-CNN: 16 at 227; scaled with the warp)
    proposals: str = "ss-fast2x"  # ss | ss-fast2x | ss-quality | multibox | ss+multibox | ss-fast2x+multibox
    train_proposals: int = 300  # per training image, for fine-tuning and the SVMs' negatives
    test_proposals: int = 300  # per test image
    multibox_k: int = 64  # MultiBox: boxes predicted per image (the paper adds 200)
    multibox_iterations: int = 300
    multibox_lr: float = 0.01  # SGD with the recipe's momentum and weight decay
    multibox_input: int = 160
    multibox_grid: int = 3  # the head sees the last map pooled to grid x grid (Erhan et al.: AlexNet's 6x6 fc6)
    iterations: int = 300  # fine-tuning SGD steps
    batch_positives: int = 32  # R-CNN: 32 positive windows ...
    batch_background: int = 96  # ... and 96 background windows per batch of 128
    fg_iou: float = 0.5  # fine-tuning: a proposal with IoU >= this to a ground-truth box is a positive of its class
    optimizer: str = "adamw"  # sgd (R-CNN's, from ImageNet weights) | adamw (from scratch on a CPU)
    lr: float = 1e-3
    head_lr_mult: float = 10.0  # R-CNN: the new (N+1)-way layer learns 10x faster
    momentum: float = 0.9
    weight_decay: float = 5e-4
    mirror: bool = True
    scoring: str = "svm"  # svm (R-CNN's) | softmax (the fine-tuned network's own N+1-way output)
    svm_negative_iou: float = 0.3  # SVM negatives: IoU below this to every box of the class
    svm_rounds: int = 3  # hard-negative mining rounds
    svm_c: float = 1e-3
    nms_iou: float = 0.3  # test: per-class greedy NMS
    max_per_class: int = 100  # test: at most this many boxes per class per image
    score_threshold: float = -1.0  # SVM scores below this are dropped before NMS (softmax: probability 0.001)
    batch_size: int = 128  # feature extraction batch
    seed: int = 0


CHOICES = {"proposals": METHODS, "optimizer": ("sgd", "adamw"), "scoring": ("svm", "softmax")}


def check_recipe(r: DetectRecipe, source: str = "recipe") -> DetectRecipe:
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise UserError(f"{source}: {what}")

    for key, allowed in CHOICES.items():
        need(getattr(r, key) in allowed, f"{key} must be one of {', '.join(allowed)}, got {getattr(r, key)!r}")
    need(64 <= r.warp <= 1024, f"warp must be in 64..1024 pixels, got {r.warp}")
    need(0 <= 2 * r.context < r.warp // 2, f"context must leave at least half the warp, got {r.context}")
    for key in ("train_proposals", "test_proposals", "iterations", "batch_size", "multibox_k", "multibox_input",
                "multibox_grid"):
        need(isinstance(getattr(r, key), int) and getattr(r, key) >= 1, f"{key} must be a positive integer")
    need(r.batch_positives >= 1 and r.batch_background >= 0, "batch_positives >= 1 and batch_background >= 0")
    need(0 < r.fg_iou <= 1 and 0 < r.svm_negative_iou <= r.fg_iou, "need 0 < svm_negative_iou <= fg_iou <= 1")
    need(0 < r.nms_iou <= 1 and r.max_per_class >= 1, "nms_iou in (0, 1] and max_per_class >= 1")
    need(r.lr > 0 and r.head_lr_mult > 0 and r.svm_c > 0 and r.multibox_lr > 0,
         "lr, head_lr_mult, svm_c and multibox_lr must be positive")
    return r


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml") if not p.stem.startswith("faster"))


def read_preset(name: str, what: str, names: Callable[[], list[str]], prefix: str = "") -> tuple[Path, dict]:
    """(path, the mapping it holds) of a detection recipe, R-CNN's or Faster R-CNN's: a preset by name
    (RECIPE_DIR/<prefix><name>.yaml) or a YAML file's path, read within the project's bound. ``names()`` lists the
    presets, called only for the error."""
    from ..fileio import read_bounded

    path = Path(name) if name.endswith((".yaml", ".yml")) else RECIPE_DIR / f"{prefix}{name}.yaml"
    if not path.is_file():
        raise UserError(f"unknown {what} recipe {name!r}; choose from {', '.join(names())} or a .yaml file")
    try:
        values = yaml.safe_load(read_bounded(path, limit=1 << 20).decode("utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"recipe {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise UserError(f"recipe {path}: not a mapping")
    return path, values


def load_recipe(name: str = "cpu", overrides: Optional[dict[str, Any]] = None) -> DetectRecipe:
    """A preset by name (or a YAML file's path), with ``overrides`` (None values ignored) applied, checked."""
    path, values = read_preset(name, "detection", recipe_names)
    known = {f.name: f.type for f in fields(DetectRecipe)}
    if set(values) - set(known):
        raise UserError(f"recipe {path}: unknown keys {', '.join(map(str, sorted(set(values) - set(known))))}")
    values.setdefault("name", path.stem)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        r = DetectRecipe(**values)
    except TypeError as e:
        raise UserError(f"recipe {path}: {e}") from None
    return check_recipe(r, f"recipe {path.stem}")


def recipe_from_dict(values: dict, source: str) -> DetectRecipe:
    known = {f.name for f in fields(DetectRecipe)}
    try:
        return check_recipe(DetectRecipe(**{k: v for k, v in values.items() if k in known}), source)
    except TypeError as e:
        raise UserError(f"{source}: bad recipe ({e})") from None
