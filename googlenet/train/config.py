"""The training configuration: one typed object, resolved in one direction.

    recipe YAML (googlenet/recipes/<name>.yaml)  ->  --config FILE.yaml  ->  command-line flags

Later sources override earlier ones, key by key. The resolved object is written to the run folder (config.yaml) and
into every checkpoint, so a run can always say exactly what it trained with.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from importlib import resources
from typing import Any, Optional

import yaml

from ..errors import UserError, one_line
from ..fileio import MiB, Unreadable, read_bounded

SCHEDULES = ("step", "poly", "cosine")
OPTIMIZERS = ("sgd", "adamw")
AUGMENTATIONS = ("paper", "flip", "none")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
INIT_RECIPE = "finetune"
DEFAULT_RECIPE = "fashion-quick"


@dataclass
class TrainConfig:
    """Every choice a training run makes. Field comments say where the recipe values come from."""

    # what and where
    arch: str = "googlenet"
    data: Optional[str] = None  # None: the embedded Fashion-MNIST subset; "fashion-mnist"; or an ImageFolder DIR
    out: str = "runs/train"
    recipe: str = DEFAULT_RECIPE
    split_from: Optional[str] = None  # one-folder --data: a run folder whose split lists old files keep (data/split)
    val_fraction: float = 0.2  # one-folder --data DIR (no train/ and val/): the held-out share (googlenet/data/split)
    balance: bool = False  # class-balanced sampling: each class drawn equally often (with replacement)
    classes: Optional[str] = None  # embedded data only: a class subset by index, e.g. "0-4" or "5,7,9"
    per_class: Optional[int] = None  # embedded data only: the first N training images of each class
    # fine-tuning (googlenet/finetune): start from weights, freeze part, a separate lr for the new heads
    init: Optional[str] = None  # weights file, torchvision-layout .pth, or torchvision | bvlc | inception5h
    freeze: str = "none"  # none | trunk | LAYER (everything up to and including LAYER)
    head_lr_mult: float = 1.0  # the per-class classifier layers train at lr * head_lr_mult
    # schedule
    epochs: int = 4
    batch_size: int = 64  # global batch (split across DDP ranks)
    optimizer: str = "sgd"
    lr: float = 0.01  # at reference_batch; scaled linearly with the global batch (Goyal et al. 2017)
    reference_batch: int = 32  # Caffe's batch, the batch ``lr`` is quoted at
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 2e-4
    betas: tuple = (0.9, 0.999)
    schedule: str = "step"
    step_epochs: float = 8.0  # "step": multiply the lr by step_gamma every step_epochs (paper: 4% every 8 epochs)
    step_gamma: float = 0.96
    poly_power: float = 0.5  # "poly": lr * (1 - t/T)^power (Caffe quick_solver)
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0  # "cosine": final lr / peak lr
    # loss and averaging
    aux_weight: float = 0.3  # paper section 5
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # 0: off. Polyak averaging as an exponential moving average of the weights
    ema_warmup: bool = True  # decay_t = min(decay, (1 + t) / (10 + t)): early averages do not keep the init
    grad_clip: Optional[float] = None
    skip_nonfinite: bool = False
    # input
    input_size: int = 224
    resize_size: Optional[int] = None  # eval resize of the shorter side; None: input_size * 256 / 224
    # How folder images become the network's input (saved with the weights; eval and predict apply the same). None:
    # the --init weights' value (their metadata), else ImageNet's RGB 0..1 mean/std. The embedded Fashion-MNIST
    # keeps its own (grey, its mean/std).
    mean: Optional[tuple] = None  # 3 numbers, in the model's channel order and pixel scale
    std: Optional[tuple] = None
    channel_order: Optional[str] = None  # RGB | BGR (Caffe's)
    pixel_range: Optional[int] = None  # 1: pixels in 0..1 (torchvision); 255: 0..255 (Caffe)
    grayscale: Optional[bool] = None  # luminance replicated to 3 channels
    augment: str = "paper"  # "paper": scale/aspect crops, random interpolation, photometric, mirror; "flip"; "none"
    crop_scale: tuple = (0.08, 1.0)
    crop_ratio: tuple = (3 / 4, 4 / 3)
    color_jitter: float = 0.4  # brightness, contrast and saturation factors in [1 - x, 1 + x] (Howard 2013)
    lighting: float = 0.1  # AlexNet PCA lighting noise, std of the eigenvalue weights
    max_train_images: Optional[int] = None
    max_eval_images: Optional[int] = None
    # machine
    workers: int = 4
    shuffle_buffer: int = 1000  # --data SHARDS: samples in the shuffle buffer of each loader worker
    shard_read: str = "stream"  # --data SHARDS: "stream" (sequential, per rank) or "index" (the global plan)
    device: str = "auto"
    precision: str = "auto"  # resolved when training starts: googlenet/precision.py
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False  # PyTorch's deterministic algorithms (docs/training.md, "Reproducibility")
    sync_bn: bool = False
    seed: int = 0
    eval_every: int = 1
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints (last.pt); 0: at the end of each epoch only
    dist_timeout_s: float = 300.0
    notes: str = ""

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def peak_lr(self) -> float:
        """The learning rate actually used: ``lr`` scaled linearly by global batch / reference batch."""
        return self.lr * self.batch_size / self.reference_batch


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def list_recipes() -> list[str]:
    folder = resources.files("googlenet") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, source: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{source}: not valid YAML: {one_line(e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of config keys, got {type(data).__name__}")
    if unknown := sorted(set(data) - set(FIELDS)):
        raise UserError(f"{source}: unknown config key {unknown[0]!r}; known keys: {', '.join(FIELDS)}")
    return data


def load_recipe(name: str) -> dict:
    if name not in list_recipes():
        raise UserError(f"unknown recipe {name!r}; choose from {', '.join(list_recipes())}")
    text = (resources.files("googlenet") / "recipes" / f"{name}.yaml").read_text(encoding="utf-8")
    return _read_yaml(text, f"recipe {name}")


def load_config_file(path: str) -> dict:
    try:
        text = read_bounded(path, limit=MiB).decode("utf-8")  # a config is a few hundred bytes; 1 MiB is plenty
    except (Unreadable, UnicodeDecodeError) as e:
        if isinstance(e, Unreadable) and str(e) == "file not found":
            raise UserError(f"config file not found: {path}") from None
        raise UserError(f"cannot read config file {path}: {e}") from None
    return _read_yaml(text, str(path))


def _coerce(key: str, value: Any, source: str) -> Any:
    """Checks a value against the field's default type (YAML gives ints for floats, lists for tuples)."""
    default = FIELDS[key].default
    if value is None:
        return None
    kind = type(default)
    if default is None:  # Optional[...] fields
        kind = {"grad_clip": float, "resize_size": int, "max_train_images": int, "max_eval_images": int,
                "data": str, "init": str, "classes": str, "per_class": int, "split_from": str,
                "mean": tuple, "std": tuple, "channel_order": str, "pixel_range": int, "grayscale": bool}[key]
    try:
        if kind is bool and isinstance(value, bool):
            return value
        if kind in (int, float) and not isinstance(value, bool) and (kind is float or float(value).is_integer()):
            return kind(value)
        if kind is tuple and isinstance(value, (list, tuple)) and len(value) == (3 if key in ("mean", "std") else 2) \
                and not any(isinstance(v, bool) for v in value):
            return tuple(float(v) for v in value)
        if kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    except (TypeError, ValueError):
        pass
    raise UserError(f"{source}: {key} must be {kind.__name__}, got {value!r}")


def resolve(recipe: Optional[str] = None, config_file: Optional[str] = None,
            overrides: Optional[dict] = None) -> TrainConfig:
    """recipe < config file < overrides (flags; None values mean "not given")."""
    file_values = load_config_file(config_file) if config_file else {}
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    # The recipe named by a flag wins over one named in the config file, which wins over the default: finetune when
    # training starts from weights (--init), else fashion-quick. From-scratch settings would waste the weights.
    init = flags.get("init") or file_values.get("init")
    name = recipe or file_values.get("recipe") or (INIT_RECIPE if init else DEFAULT_RECIPE)
    if init and not (recipe or file_values.get("recipe")):
        print(f"train: --init without --recipe: using the {INIT_RECIPE} recipe", file=sys.stderr)
    values: dict[str, Any] = {}
    for source, layer in ((f"recipe {name}", load_recipe(name)), (str(config_file), file_values), ("flags", flags)):
        values.update({k: _coerce(k, v, source) for k, v in layer.items()})
    values["recipe"] = name
    explicit_keys = set(file_values) | set(flags)
    if "warmup_epochs" not in explicit_keys and values.get("warmup_epochs", 0) >= values.get("epochs", 1) > 0:
        # A run shorter than its recipe's warm-up (finetune's 1 epoch, --epochs 1) warms up over its first tenth.
        values["warmup_epochs"] = values["epochs"] / 10
    if values.get("init"):
        for k, v in init_defaults(str(values["init"]), explicit_keys).items():
            values[k] = _coerce(k, v, f"--init {values['init']}")
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


# What --init's weights decide unless the config file or a flag says otherwise (a recipe is generic: the weights win).
INIT_KEYS = ("arch", "input_size", "resize_size", "mean", "std", "channel_order", "pixel_range", "grayscale")


def init_defaults(spec: str, explicit: set) -> dict:
    """The arch and preprocessing of the --init source for the keys not in ``explicit``. Its resize_size only goes
    with its input_size: a size set by hand keeps the usual 256/224 resize."""
    from ..finetune import init_arch, init_preprocessing

    pre = init_preprocessing(spec)
    out = {k: pre[k] for k in INIT_KEYS[1:] if k in pre and k not in explicit}
    if "input_size" in explicit:
        out.pop("resize_size", None)
    if "arch" not in explicit:
        out["arch"] = init_arch(spec)
    return out


def validate(cfg: TrainConfig) -> None:
    """Out-of-range and conflicting values, each as one line."""
    from ..models import list_models

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise UserError(message)

    need(cfg.arch in list_models(), f"unknown arch {cfg.arch!r}; choose from {', '.join(list_models())}")
    need(cfg.epochs >= 1, f"epochs must be at least 1, got {cfg.epochs}")
    need(cfg.batch_size >= 1, f"batch_size must be at least 1, got {cfg.batch_size}")
    need(cfg.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    betas = cfg.betas
    need(isinstance(betas, (list, tuple)) and len(betas) == 2
         and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in betas),
         f"betas must be two numbers in [0, 1), got {betas!r}")
    for key, choices in (("schedule", SCHEDULES), ("augment", AUGMENTATIONS), ("precision", PRECISIONS)):
        need(getattr(cfg, key) in choices, f"{key} must be one of {', '.join(choices)}, got {getattr(cfg, key)!r}")
    for key in ("lr", "head_lr_mult", "reference_batch", "step_epochs", "step_gamma", "poly_power", "dist_timeout_s"):
        v = getattr(cfg, key)
        need(math.isfinite(v) and v > 0, f"{key} must be a positive finite number, got {v}")
    for key in ("weight_decay", "warmup_epochs", "label_smoothing", "aux_weight", "min_lr_ratio", "color_jitter",
                "lighting"):
        v = getattr(cfg, key)
        need(math.isfinite(v) and v >= 0, f"{key} must be >= 0, got {v}")
    need(0 < cfg.val_fraction < 1, f"val_fraction must be in (0, 1), got {cfg.val_fraction}")
    need(0 <= cfg.momentum < 1, f"momentum must be in [0, 1), got {cfg.momentum}")
    need(cfg.label_smoothing < 1, f"label_smoothing must be < 1, got {cfg.label_smoothing}")
    need(0 <= cfg.ema_decay < 1, f"ema_decay must be in [0, 1) (0 turns averaging off), got {cfg.ema_decay}")
    need(cfg.warmup_epochs < cfg.epochs, f"warmup_epochs ({cfg.warmup_epochs}) must be shorter than the run "
                                         f"({cfg.epochs} epochs)")
    need(64 <= cfg.input_size <= 1024, f"input_size must be in 64..1024 (the network needs >= 64), "
                                       f"got {cfg.input_size}")
    need(cfg.resize_size is None or cfg.resize_size >= cfg.input_size,
         f"resize_size ({cfg.resize_size}) must be at least input_size ({cfg.input_size})")
    for key in ("mean", "std"):
        v = getattr(cfg, key)
        need(v is None or all(math.isfinite(x) for x in v) and (key == "mean" or min(v) > 0),
             f"{key} must be 3 finite numbers{' above 0' if key == 'std' else ''}, got {v}")
    need(cfg.channel_order in (None, "RGB", "BGR"), f"channel_order must be RGB or BGR, got {cfg.channel_order!r}")
    need(cfg.pixel_range in (None, 1, 255), f"pixel_range must be 1 or 255, got {cfg.pixel_range!r}")
    lo, hi = cfg.crop_scale
    need(0 < lo <= hi <= 1, f"crop_scale must satisfy 0 < min <= max <= 1, got {list(cfg.crop_scale)}")
    lo, hi = cfg.crop_ratio
    need(0 < lo <= hi, f"crop_ratio must satisfy 0 < min <= max, got {list(cfg.crop_ratio)}")
    need(cfg.grad_clip is None or cfg.grad_clip > 0, f"grad_clip must be positive, got {cfg.grad_clip}")
    for key in ("max_train_images", "max_eval_images", "per_class"):
        v = getattr(cfg, key)
        need(v is None or v >= 1, f"{key} must be at least 1, got {v}")
    need(cfg.workers >= 0, f"workers must be >= 0, got {cfg.workers}")
    need(cfg.eval_every >= 1, f"eval_every must be at least 1, got {cfg.eval_every}")
    need(cfg.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {cfg.checkpoint_every}")
    need(cfg.device in ("auto", "cpu") or cfg.device.startswith("cuda"),
         f"device must be auto, cpu or cuda[:N], got {cfg.device!r}")
    need(not (cfg.precision == "fp16" and cfg.device == "cpu"),
         "precision fp16 needs a CUDA device (it uses a gradient scaler); use bf16 on the CPU")
    need(cfg.shard_read in ("stream", "index"), f"shard_read must be stream or index, got {cfg.shard_read!r}")
    need(not (cfg.sync_bn and cfg.arch == "googlenet"),
         "sync_bn needs a BatchNorm arch (googlenet_bn or googlenet_tv); googlenet uses LRN")


def save_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
