"""Faster R-CNN recipes: ``faster_cpu.yaml`` (the offline scenes on two CPU cores, FPN), ``faster_cpu_c4.yaml`` (the
same with the C4 trunk and a cheaper head) and ``faster_gpu.yaml`` (800 px,
torchvision's detection-reference settings), beside the R-CNN recipes in googlenet/detect/. Same code, only sizes,
anchors and the schedule differ; flags override a preset and the resolved recipe travels in the detector file."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from ...errors import UserError

RECIPE_DIR = Path(__file__).resolve().parent.parent  # googlenet/detect/
PREFIX = "faster_"


@dataclass
class FasterRecipe:
    name: str = "cpu"
    trunk: str = "fpn"  # c4 | fpn (backbone.py)
    arch: str = "googlenet_bn"  # the trunk when --init none; an --init source's own arch wins
    min_size: int = 192  # GeneralizedRCNNTransform: shorter side resized to this ...
    max_size: int = 320  # ... unless the longer side then exceeds this
    # One anchor size per FPN map ("0", "1", "2", "pool": strides 8, 16, 32, 64; a multiple of 4 sizes shares them
    # out in order), or all of them on the single C4 map (stride 16), torchvision's two conventions.
    anchor_sizes: list = field(default_factory=lambda: [32, 64, 128, 256])
    aspect_ratios: list = field(default_factory=lambda: [0.5, 1.0, 2.0])
    fpn_channels: int = 256
    representation_size: int = 1024  # FPN's TwoMLPHead width (C4's head is inception5a/5b, 1024 wide)
    trainable_layers: Optional[int] = None  # top stages trained (0..4); None: 3 with --init weights, 4 from scratch
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    # RoIAlign's samples a bin side (torchvision's default 2; 0: adaptive). On a CPU its backward is single-threaded
    # and dominates a C4 step (832 channels, 14 x 14 bins: 4.9 of 10.5 s); 1 is enough where bins are under a cell.
    roi_sampling_ratio: int = 2
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    detections_per_img: int = 100
    epochs: int = 12
    batch_size: int = 4
    optimizer: str = "sgd"  # sgd (torchvision's references) | adamw
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 100  # linear warm-up from lr / 1000, as torchvision's references
    schedule: str = "cosine"  # cosine | steps (x0.1 at 2/3 and 8/9 of the epochs, the references' 26-epoch shape)
    mirror: bool = True  # horizontal flips, p = 0.5
    workers: int = 0  # DataLoader processes
    device: str = "cpu"
    seed: int = 0


CHOICES = {"trunk": ("c4", "fpn"), "optimizer": ("sgd", "adamw"), "schedule": ("cosine", "steps")}
POSITIVE_INTS = ("min_size", "max_size", "fpn_channels", "representation_size", "rpn_pre_nms_top_n_train",
                 "rpn_post_nms_top_n_train", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test",
                 "rpn_batch_size_per_image", "box_batch_size_per_image", "detections_per_img", "epochs",
                 "batch_size")


def check_recipe(r: FasterRecipe, source: str = "recipe") -> FasterRecipe:
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise UserError(f"{source}: {what}")

    for key, allowed in CHOICES.items():
        need(getattr(r, key) in allowed, f"{key} must be one of {', '.join(allowed)}, got {getattr(r, key)!r}")
    for key in POSITIVE_INTS:
        v = getattr(r, key)
        need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{key} must be a positive integer, got {v!r}")
    need(64 <= r.min_size <= r.max_size <= 4096, f"need 64 <= min_size <= max_size <= 4096, got {r.min_size}, "
                                                  f"{r.max_size}")
    need(isinstance(r.anchor_sizes, list) and r.anchor_sizes
         and all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in r.anchor_sizes),
         f"anchor_sizes must be a list of positive numbers, got {r.anchor_sizes!r}")
    need(r.trunk != "fpn" or len(r.anchor_sizes) % 4 == 0,
         f"the fpn trunk has 4 maps (strides 8, 16, 32, 64): give 4 anchor sizes (or a multiple of 4), "
         f"got {len(r.anchor_sizes)}")
    need(isinstance(r.aspect_ratios, list) and r.aspect_ratios
         and all(isinstance(a, (int, float)) and not isinstance(a, bool) and a > 0 for a in r.aspect_ratios),
         f"aspect_ratios must be a list of positive numbers, got {r.aspect_ratios!r}")
    need(r.trainable_layers is None or (isinstance(r.trainable_layers, int) and 0 <= r.trainable_layers <= 4),
         f"trainable_layers must be 0..4, got {r.trainable_layers!r}")
    need(r.lr > 0 and r.momentum >= 0 and r.weight_decay >= 0, "lr must be positive, momentum and weight_decay >= 0")
    need(0 <= r.box_score_thresh < 1 and 0 < r.box_nms_thresh <= 1, "box_score_thresh in [0, 1), nms in (0, 1]")
    need(isinstance(r.warmup_iters, int) and r.warmup_iters >= 0, "warmup_iters must be an integer >= 0")
    need(isinstance(r.workers, int) and r.workers >= 0, "workers must be an integer >= 0")
    need(isinstance(r.roi_sampling_ratio, int) and not isinstance(r.roi_sampling_ratio, bool)
         and 0 <= r.roi_sampling_ratio <= 8, f"roi_sampling_ratio must be 0..8, got {r.roi_sampling_ratio!r}")
    return r


def recipe_names() -> list[str]:
    return sorted(p.stem[len(PREFIX):] for p in RECIPE_DIR.glob(f"{PREFIX}*.yaml"))


def load_recipe(name: str = "cpu", overrides: Optional[dict[str, Any]] = None) -> FasterRecipe:
    """A preset by name (``cpu``, ``gpu``: googlenet/detect/faster_<name>.yaml) or a YAML file's path, with
    ``overrides`` (None values ignored) applied, checked."""
    from ..recipe import read_preset

    path, values = read_preset(name, "Faster R-CNN", recipe_names, PREFIX)
    values.setdefault("name", path.stem.removeprefix(PREFIX))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return recipe_from_dict(values, f"recipe {path.stem}")


def recipe_from_dict(values: dict, source: str) -> FasterRecipe:
    known = {f.name for f in fields(FasterRecipe)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{source}: unknown keys {', '.join(map(str, unknown))}")
    try:
        return check_recipe(FasterRecipe(**values), source)
    except TypeError as e:
        raise UserError(f"{source}: bad recipe ({e})") from None
