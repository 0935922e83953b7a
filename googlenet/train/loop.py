"""The training loop: one code path for 1 process or N (DDP), fp32/bf16/fp16, channels_last and compile.

    data plan (seeded per epoch) -> TrainStep (forward with aux, loss, backward, step) -> EMA -> eval -> checkpoint
"""

from __future__ import annotations

import copy
import math
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch import nn

from ..data.scan import Skipped
from ..errors import UserError
from ..fileio import atomic_write_text, ensure_dir
from ..models import create_model
from ..precision import probe_key, resolve_precision, time_train_step
from ..weights import load_state_dict_checked, save_model
from . import checkpoint as ckpt
from .config import TrainConfig, save_yaml
from .data import balanced_batches, build_data, global_batches, mix, shard, skipped_as_dicts
from .dropout import install as install_global_dropout, spread as spread_dropout
from .distributed import Dist, setup, teardown
from .report import write_metrics, write_plot
from .step import TrainStep, autocast, to_device


class NonFiniteLoss(UserError):
    pass


class EMA:
    """Polyak averaging (paper section 6) as an exponential moving average of the weights; buffers are copied.

    With warm-up the decay is min(decay, (1 + t) / (10 + t)), so a short run's average is not dominated by the
    random initialisation (the TensorFlow ExponentialMovingAverage ``num_updates`` rule).
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay
        torch._foreach_lerp_(list(self.module.parameters()), [p.detach() for p in model.parameters()], 1.0 - d)
        for b, src in zip(self.module.buffers(), model.buffers()):
            b.copy_(src)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def make_optimizer(cfg: TrainConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    # No weight decay on biases and norm parameters (1-d tensors): Caffe's train_val sets decay_mult 0 on biases.
    # Frozen parameters (--freeze) are left out; the per-class heads get lr * head_lr_mult ("lr_mult").
    from ..finetune import head_parameter_names

    heads = head_parameter_names(model) if cfg.head_lr_mult != 1.0 else set()
    groups = []
    for is_head in (False, True):
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad and (k in heads) == is_head]
        mult = cfg.head_lr_mult if is_head else 1.0
        groups += [{"params": [p for _, p in named if p.ndim > 1], "weight_decay": cfg.weight_decay, "lr_mult": mult},
                   {"params": [p for _, p in named if p.ndim <= 1], "weight_decay": 0.0, "lr_mult": mult}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise UserError("--freeze left no parameter to train")
    # One fused kernel for all parameters where torch has one: AdamW's step on the 13M parameters takes 8 ms
    # instead of 33 ms (foreach) on the 2-core CPU, about 9% of the default run.
    fused = {"fused": True} if groups[0]["params"][0].device.type in ("cpu", "cuda") else {}
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), **fused)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **fused)


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The schedule as a pure function of the step, so resuming needs only the step count."""
    epoch = step / steps_per_epoch
    if epoch < cfg.warmup_epochs:
        return min(1.0, (step + 1) / (cfg.warmup_epochs * steps_per_epoch))
    if cfg.schedule == "step":  # paper: "decreasing the learning rate by 4% every 8 epochs"
        return cfg.step_gamma ** math.floor(epoch / cfg.step_epochs)
    t = min(1.0, (epoch - cfg.warmup_epochs) / max(1e-9, cfg.epochs - cfg.warmup_epochs))
    if cfg.schedule == "poly":  # Caffe quick_solver: lr * (1 - iter/max_iter)^power
        return (1.0 - t) ** cfg.poly_power
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))  # cosine


def seed_epoch(seed: int, epoch: int, rank: int) -> int:
    """Each epoch starts from a seed of its own, so an epoch after a resume draws what it would have drawn; returns
    the epoch's base for the seeds of its steps on ``rank`` (a step's data and its forward pass are seeded by their
    position, so a run resumed in the middle of an epoch draws what it would have drawn too)."""
    torch.manual_seed((seed * 1_000_003 + epoch) * 1024 + rank)
    return mix(seed, epoch, rank)


@torch.no_grad()
def evaluate(model: nn.Module, source, d: Dist, cfg: TrainConfig) -> dict:
    """Held-out loss, top-1 and top-5 as sums of counts over ranks (exact under uneven shards)."""
    model.eval()
    plan = shard(global_batches(len(source), max(cfg.batch_size, 256), shuffle=False), d.rank, d.world)
    loss_sum, c1, c5, n, skipped = 0.0, 0, 0, 0, []
    for images, labels, bad in source.batches(plan):
        skipped += bad
        if len(labels) == 0:
            continue
        images, labels = to_device(images, labels, d.device, cfg.channels_last)
        with autocast(d.device, cfg.precision):
            logits = model(images).float()
        loss_sum += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        c1 += int((top[:, 0] == labels).sum())
        c5 += int((top == labels[:, None]).any(1).sum())
        n += len(labels)
    loss_sum, c1, c5, n = d.sum([loss_sum, c1, c5, n])
    return {"eval_loss": loss_sum / max(n, 1), "top1": c1 / max(n, 1), "top5": c5 / max(n, 1),
            "eval_images": int(n), "skipped": skipped}


def train(cfg: TrainConfig, *, resume: Optional[str] = None, quiet: bool = False, reprobe: bool = False) -> dict:
    """Runs the whole training; returns the summary (the --json object) on every rank. ``reprobe``: time the
    precisions again instead of taking the kept verdict (googlenet/precision.py)."""
    t_start = time.perf_counter()
    if cfg.deterministic:
        # PyTorch's deterministic algorithms (an op without one raises instead of running nondeterministically).
        # The project's own randomness is already fixed by the seed: each epoch reseeds (seed_epoch), batches come
        # from seeded generators, and DataLoader workers take their seeds from the reseeded main stream.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic GEMMs
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    d = setup(cfg.device, cfg.dist_timeout_s)
    try:
        return _train(cfg, d, resume, quiet, t_start, reprobe)
    finally:
        teardown(d)


def _train(cfg: TrainConfig, d: Dist, resume: Optional[str], quiet: bool, t_start: float, reprobe: bool) -> dict:
    out = Path(cfg.out)
    if d.main:
        ensure_dir(out)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if d.main and not quiet else (lambda *a: None)
    torch.manual_seed(cfg.seed)
    data = build_data(cfg, d.device)
    n_train = len(data.train)
    if n_train == 0 or len(data.held_out) == 0:
        raise UserError(f"{data.name}: no images to train or evaluate on")
    # Every rank makes the same steps: ceil(images / global batch) per epoch.
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)

    from tqdm import tqdm

    from .. import finetune

    started_from = None
    if cfg.init:
        source = finetune.load_init(cfg.init)
        model = finetune.build_from(source, cfg.arch, len(data.class_names), spec=cfg.init)
        started_from = finetune.apply_init(model, source, data.class_names, spec=cfg.init)
        del source
        say(f"initialised from {cfg.init}: {started_from['carried_classes']} of {len(data.class_names)} classes "
            f"carried over{', heads replaced' if started_from['heads_replaced'] else ''}")
    else:
        model = create_model(cfg.arch, num_classes=len(data.class_names), aux_logits=True)
    if cfg.freeze != "none":
        frozen = finetune.freeze(model, cfg.freeze)
        say(f"--freeze {cfg.freeze}: {len(frozen)} parameter tensors frozen")
    model.to(d.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.sync_bn and d.ddp:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ema = EMA(model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay > 0 else None
    peak_lr = cfg.peak_lr()
    optimizer = make_optimizer(cfg, model, peak_lr)

    start_epoch, step, history, best_top1, skipped_all, nonfinite = 0, 0, [], -1.0, [], 0
    first_step, partial = 0, None  # a checkpoint from inside an epoch: the steps of it already made, their sums
    if resume is None and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        resume = "auto"  # torchrun restarted the group after a failure: continue from the last checkpoint
        say(f"restart {os.environ['TORCHELASTIC_RESTART_COUNT']} under torchrun: --resume auto")
    path = ckpt.resume_path(resume, out)
    if path is not None:
        ck = ckpt.load_checkpoint(path, map_location=d.device)
        load_state_dict_checked(model, ck["model"], source=str(path))
        if ema is not None:
            if ck.get("ema") is None:
                raise UserError(f"{path} has no EMA weights but this config averages them (ema_decay)")
            ema.load_state_dict(ck["ema"])
        optimizer.load_state_dict(ck["optimizer"])
        start_epoch, step = int(ck["epoch"]), int(ck["scheduler"]["step"])
        first_step, partial = int(ck.get("step_in_epoch", 0)), ck.get("partial")
        history, best_top1 = list(ck["metrics"]), float(ck["best_top1"])
        skipped_all, nonfinite = list(ck.get("skipped", [])), int(ck.get("nonfinite_steps", 0))
        ckpt.set_rng_state(ck["rng"])
        say(f"resuming from {path} at epoch {start_epoch}/{cfg.epochs}"
            + (f", step {first_step} of epoch {start_epoch + 1}" if first_step else ""))
        if partial is not None and len(partial) != d.world:
            raise UserError(f"{path} was written inside an epoch by {len(partial)} process(es); resume it with the "
                            f"same number (this run has {d.world}), or from an epoch's end")
        if start_epoch >= cfg.epochs:
            say(f"{path} already finished {start_epoch} epochs; nothing to train")

    # After the checks that can fail (resume, data), before the config is saved: it records what ran. A resumed
    # "auto" run keeps the precision its checkpoint ran with (a probe could tip the other way on a busy machine).
    resumed_precision = (ck.get("config") or {}).get("precision") if path is not None else None
    kept_from_checkpoint = cfg.precision == "auto" and resumed_precision in ("fp32", "bf16", "fp16")
    if kept_from_checkpoint:
        cfg = replace(cfg, precision=resumed_precision)
    probed = dict(batch_size=max(1, min(32, cfg.batch_size // d.world)), input_size=cfg.input_size,
                  channels_last=cfg.channels_last)  # the step the CPU probe times, and so part of its key
    precision, why = resolve_precision(
        cfg.precision, d.device, lambda p: time_train_step(model, p, device=d.device, **probed), reprobe=reprobe,
        key=probe_key(arch=cfg.arch, compile=cfg.compile, **probed))
    if d.ddp and cfg.precision == "auto":  # every rank must run the same precision: bf16 only if all chose it
        precision = precision if d.all_true(precision != "fp32") else "fp32"
    cfg = replace(cfg, precision=precision)
    say(f"precision {precision} ({f'auto: kept from {path}' if kept_from_checkpoint else why})")
    if d.main:
        atomic_write_text(out / "config.yaml", save_yaml(cfg))
    # Dropout masks drawn for the whole global batch: W processes drop what one would (train/dropout.py).
    dropouts = install_global_dropout(model)
    net = model
    if d.ddp:
        ids = [d.device.index] if d.device.type == "cuda" else None  # gloo's CPU ranks take no device ids
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    # A linear probe (--freeze trunk) trains fc alone: the aux heads, frozen with the trunk, are not even run.
    aux_weight = 0.0 if cfg.freeze == "trunk" else cfg.aux_weight
    trainer = TrainStep(net, optimizer, precision=cfg.precision, channels_last=cfg.channels_last,
                        compile=cfg.compile, aux_weight=aux_weight, label_smoothing=cfg.label_smoothing,
                        device=d.device, grad_clip=cfg.grad_clip, all_finite=d.all_true if d.ddp else None)
    inject_nan = int(os.environ.get("GOOGLENET_TEST_NAN_AT_STEP", "-1"))  # test hook: poison one step's input
    die_at = int(os.environ.get("GOOGLENET_TEST_DIE_AT_STEP", "-1"))  # test hook: a worker dies at this step ...
    die_rank = int(os.environ.get("GOOGLENET_TEST_DIE_RANK", "0"))  # ... of an epoch, on this rank

    def checkpoint_fields() -> dict:
        """What a checkpoint holds besides where it stands in the run (the run's state when called)."""
        return dict(scheduler={"step": step}, model=model.state_dict(),
                    ema=ema.state_dict() if ema is not None else None, optimizer=optimizer.state_dict(),
                    config=cfg.to_dict(), metrics=history, best_top1=best_top1, skipped=skipped_all,
                    nonfinite_steps=nonfinite, class_names=data.class_names, preprocessing=data.preprocessing)

    for note in data.notes:
        say(note)
    say(f"training {cfg.arch} on {data.name}: {n_train} images, {len(data.held_out)} held out, "
        f"{len(data.class_names)} classes, {cfg.epochs} epochs, global batch {cfg.batch_size} on {d.world} "
        f"process(es), lr {peak_lr:g}, {cfg.precision}{', channels_last' if cfg.channels_last else ''}")
    train_images, train_time = 0, 0.0
    for epoch in range(start_epoch, cfg.epochs):
        base = seed_epoch(cfg.seed, epoch, d.rank)
        # Rank 0's base, shared by every rank for the draws that follow the global batch (indexed data, dropout),
        # so one process draws what it always drew.
        shared = mix(cfg.seed, epoch, 0)
        data_seed = shared if data.train.seeds_by_global_position else base
        first = first_step if epoch == start_epoch else 0
        batches = balanced_batches(data.train.targets, cfg.batch_size, seed=cfg.seed, epoch=epoch) \
            if cfg.balance else global_batches(n_train, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch)
        plan = shard(batches, d.rank, d.world)
        model.train()
        if cfg.freeze != "none":
            finetune.keep_frozen_in_eval(model)
        loss_sum, correct, seen, epoch_skipped, t0 = 0.0, 0, 0, [], time.perf_counter()
        if first and partial is not None:
            loss_sum, correct, seen, kept = partial[d.rank]
            epoch_skipped = [Skipped(k["file"], k["error"]) for k in kept]
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", file=sys.stderr,
                   disable=not d.main or quiet, mininterval=1.0, leave=False, dynamic_ncols=True)
        bar.update(first)
        train_batches = data.train.batches(plan, first, data_seed, spread=(d.rank, d.world))
        for i, (images, labels, bad) in enumerate(_closing_on_error(train_batches, bar), start=first):
            if i == die_at and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0" and d.rank == die_rank:
                os.kill(os.getpid(), signal.SIGKILL)  # test hook: kill -9 of this worker, once (not after a restart)
            epoch_skipped += bad
            n_local = len(labels)
            n_global = int(d.sum([n_local])[0]) if d.ddp else n_local
            if n_global == 0:  # every file of this global batch was broken
                step += 1
                bar.update(1)
                continue
            for group in optimizer.param_groups:
                group["lr"] = peak_lr * lr_factor(cfg, step, steps_per_epoch) * group.get("lr_mult", 1.0)
            if n_local == 0:  # a rank without images still joins the gradient all-reduce, with weight 0
                images = torch.zeros(1, 3, cfg.input_size, cfg.input_size)
                labels = torch.zeros(1, dtype=torch.long)
            if step == inject_nan:
                images = images.clone().fill_(float("nan"))
            weight = n_local * d.world / n_global
            torch.manual_seed(mix(shared, i, "forward"))  # dropout's draws, from the step's position
            spread_dropout(dropouts, (len(batches[i]), d.rank, d.world) if n_local else None)
            result = trainer(images, labels, loss_weight=weight)
            if not result.finite:
                nonfinite += 1
                if not cfg.skip_nonfinite:
                    bar.close()
                    last = out / "last.pt"
                    kept = (f"last good checkpoint {last} (epoch {start_epoch_of(last)}) is intact"
                            if last.is_file() else "no checkpoint was written yet")
                    raise NonFiniteLoss(f"non-finite loss ({float(result.loss)}) at epoch {epoch + 1}, step {step}; "
                                        f"{kept}; lower --lr or pass --skip-nonfinite")
            elif ema is not None:
                ema.update(model)
            step += 1
            if n_local and result.finite:
                loss_sum += float(result.loss) * n_local
                correct += int((result.logits.argmax(1) == labels.to(result.logits.device)).sum())
                seen += n_local
            bar.update(1)
            elapsed = time.perf_counter() - t0
            bar.set_postfix(loss=f"{float(result.loss):.3f}", img_s=f"{seen * d.world / max(elapsed, 1e-9):.0f}",
                            refresh=False)
            if cfg.checkpoint_every and (i + 1) % cfg.checkpoint_every == 0 and i + 1 < len(plan):
                # Inside the epoch: epoch stays the count of finished epochs, step_in_epoch says how far this
                # one got, and each rank's running sums come along so the epoch's row is the same after a resume.
                sums = d.gather_objects((loss_sum, correct, seen, [s.as_dict() for s in epoch_skipped]))
                if d.main:
                    ckpt.save_checkpoint(out / "last.pt", epoch=epoch, step_in_epoch=i + 1, partial=sums,
                                         **checkpoint_fields())
        bar.close()
        epoch_train_s = time.perf_counter() - t0
        loss_sum, correct, seen_all = d.sum([loss_sum, correct, seen])
        train_images += int(seen_all)
        train_time += epoch_train_s
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": loss_sum / max(seen_all, 1),
               "train_top1": correct / max(seen_all, 1), "images": int(seen_all),
               "images_per_s": round(seen_all / max(epoch_train_s, 1e-9), 1), "eval_loss": None, "top1": None,
               "top5": None, "eval_images": None, "nonfinite_steps": nonfinite}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            ev = evaluate(ema.module if ema is not None else model, data.held_out, d, cfg)
            epoch_skipped += ev.pop("skipped")
            row.update(ev)
        for part in d.gather_objects([s.as_dict() for s in epoch_skipped]):
            skipped_all += part
        skipped_all = skipped_as_dicts(skipped_all)
        row["skipped"] = len(skipped_all)
        row["epoch_s"] = round(time.perf_counter() - t0, 2)
        history.append(row)
        is_best = row["top1"] is not None and row["top1"] > best_top1
        if is_best:
            best_top1 = row["top1"]
        if d.main:
            state = dict(epoch=epoch + 1, **checkpoint_fields())
            ckpt.save_checkpoint(out / "last.pt", **state)
            if is_best:
                ckpt.save_checkpoint(out / "best.pt", **state)
            write_metrics(out / "metrics.csv", history)
            write_plot(out / "curves.png", history, f"{cfg.arch} on {data.name} ({cfg.recipe})")
        ev_text = f", held-out top-1 {100 * row['top1']:.2f}% top-5 {100 * row['top5']:.2f}%" if row["top1"] \
            is not None else ""
        say(f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f}{ev_text}, "
            f"{row['images_per_s']:.0f} img/s, {row['epoch_s']:.1f} s")
        d.barrier()

    final = history[-1] if history else {}
    weights = out / "weights.safetensors"
    if d.main:
        export = ema.module if ema is not None else model
        save_model(export, weights, arch=cfg.arch, class_names=data.class_names, preprocessing=data.preprocessing,
                   training={"recipe": cfg.recipe, "data": data.name, "epochs": len(history),
                             "top1": final.get("top1"), "top5": final.get("top5"), "ema": ema is not None,
                             "init": started_from, "freeze": cfg.freeze, "head_lr_mult": cfg.head_lr_mult})
    d.barrier()
    images_per_s = train_images / train_time if train_time else None
    # train --json prints this dict as it is: its key order is that output's.
    return {"weights": str(weights), "checkpoint": str(out / "last.pt"), "metrics": str(out / "metrics.csv"),
            "plot": str(out / "curves.png"), "top1": final.get("top1"), "top5": final.get("top5"),
            "best_top1": max(best_top1, 0.0) if history else None, "epochs": len(history),
            "images_per_s": round(images_per_s, 1) if images_per_s else None,
            "wall_s": round(time.perf_counter() - t_start, 1), "skipped_files": skipped_all,
            "nonfinite_steps": nonfinite, "config": str(out / "config.yaml"), "world_size": d.world,
            "train_images_per_epoch": history[-1]["images"] if history else 0, "eval_images": final.get("eval_images")}


def start_epoch_of(path: Path) -> str:
    try:
        return str(ckpt.load_checkpoint(path)["epoch"])
    except Exception:
        return "?"


def _closing_on_error(batches: Iterator, bar) -> Iterator:
    """The batches; the progress bar is closed before an error of the data (a broken shard stream) goes up, so
    the error's line is not written over the bar."""
    try:
        yield from batches
    except BaseException:
        bar.close()
        raise
