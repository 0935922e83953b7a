"""``googlenet train``: train GoogLeNet from scratch (the paper's recipe, or a short one on the embedded data)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from .common import non_negative_int, positive_float, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train from scratch (no flags: the embedded Fashion-MNIST subset, minutes on a CPU)",
        description="Trains GoogLeNet. Configuration is resolved recipe YAML -> --config FILE -> flags, and saved to "
                    "OUT/config.yaml and into every checkpoint. Run under torchrun for distributed data parallel.")
    g = p.add_argument_group("what")
    g.add_argument("--arch", help="googlenet (paper, LRN) | googlenet_bn | googlenet_tv")
    g.add_argument("--recipe", help="paper | caffe-quick | fashion-quick (default) | bn-modern")
    g.add_argument("--config", metavar="FILE.yaml", help="YAML file of config keys (overrides the recipe)")
    g.add_argument("--data", help="omit for the embedded Fashion-MNIST subset; 'fashion-mnist' for the full set; "
                   "or DIR with DIR/train/<class>/* and DIR/val/<class>/*, or DIR/<class>/* (split for you)")
    g.add_argument("--val-fraction", type=positive_float, help="one-folder DIR/<class>/* (no train/, val/): held-out "
                                                                "share per class, within one image (default 0.2)")
    g.add_argument("--split-from", metavar="RUN", help="one-folder DIR: the files an earlier run's split placed keep "
                                                       "their side (default: OUT's own lists when present)")
    g.add_argument("--balance", action="store_true", default=None, help="class-balanced sampling")
    g.add_argument("--classes", help="embedded data only: class indices to train on, e.g. 0-4 or 5,7,9")
    g.add_argument("--per-class", type=positive_int, help="embedded data only: the first N training images per class")
    g.add_argument("--out", metavar="DIR", help="run folder (default runs/train)")
    g.add_argument("--resume", metavar="PATH|auto", help="continue from a checkpoint; auto: OUT/last.pt if present")
    g.add_argument("--json", action="store_true", help="last stdout line: one JSON object with the results")
    g.add_argument("--checkpoint-every", type=non_negative_int, metavar="STEPS",
                   help="also write OUT/last.pt every STEPS steps inside an epoch (--resume continues from the step)")
    g = p.add_argument_group("fine-tuning (see docs/finetuning.md; --recipe finetune)")
    g.add_argument("--init", metavar="W", help="start from weights: a weights file, a torchvision-layout .pth "
                   "checkpoint, or torchvision | bvlc | inception5h; the arch and input size default to the source's")
    g.add_argument("--freeze", metavar="none|trunk|LAYER", help="trunk: train fc only (a linear probe); LAYER: freeze "
                                                                  "everything up to and including that module")
    g.add_argument("--head-lr-mult", type=positive_float, help="learning-rate multiplier for the classifier layers")
    g = p.add_argument_group("schedule")
    g.add_argument("--epochs", type=positive_int)
    g.add_argument("--batch-size", type=positive_int, help="global batch (split across processes)")
    g.add_argument("--lr", type=positive_float, help="learning rate at the recipe's reference batch; scaled "
                                                     "linearly with the global batch")
    g.add_argument("--seed", type=non_negative_int)
    g.add_argument("--skip-nonfinite", action="store_true", default=None,
                   help="skip (and count) steps whose loss is NaN/inf instead of stopping")
    g = p.add_argument_group("input")
    g.add_argument("--input-size", type=positive_int, help="square training crop (>= 64)")
    g.add_argument("--mean", type=float, nargs=3, metavar=("C1", "C2", "C3"), help="folder data: mean in the "
                   "model's channel order and pixel scale (default: --init's, else ImageNet's)")
    g.add_argument("--std", type=positive_float, nargs=3, metavar=("C1", "C2", "C3"), help="folder data: std, likewise")
    g.add_argument("--channel-order", choices=("RGB", "BGR"), help="folder data (default: --init's, else RGB)")
    g.add_argument("--pixel-range", type=int, choices=(1, 255), help="folder data: pixels in 0..1 or 0..255 "
                                                                     "(default: --init's, else 1)")
    g.add_argument("--grayscale", action=argparse.BooleanOptionalAction, default=None,
                   help="folder data: grey input replicated to 3 channels (default: --init's, else off)")
    g.add_argument("--workers", type=non_negative_int, help="DataLoader worker processes for --data DIR")
    g.add_argument("--shard-read", choices=("stream", "index"),
                   help="--data SHARDS: stream (default; sequential reads, each rank its own draw) or index (every "
                        "rank its part of the global batches, read by offset: N processes train what 1 does)")
    g.add_argument("--max-train-images", type=positive_int, help="use a fixed subset of this many training images")
    g.add_argument("--max-eval-images", type=positive_int, help="use a fixed subset of this many held-out images")
    g = p.add_argument_group("machine")
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto (the recipes' default): bf16 where this machine runs it faster, else fp32")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile the model")
    g.add_argument("--reprobe", action="store_true", help="--precision auto: time fp32 and bf16 again instead of "
                   "taking this machine's kept verdict (also GOOGLENET_REPROBE=1)")
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                   help="PyTorch's deterministic algorithms; same machine and versions: bit-identical weights")
    g.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="SyncBatchNorm across DDP processes (BatchNorm archs)")


FLAG_KEYS = ("arch", "data", "out", "epochs", "batch_size", "lr", "seed", "skip_nonfinite", "input_size", "mean", "std",
             "channel_order", "pixel_range", "grayscale", "workers", "max_train_images", "max_eval_images", "device",
             "precision", "channels_last", "compile", "deterministic", "sync_bn", "init", "freeze", "head_lr_mult",
             "classes", "per_class", "val_fraction", "split_from", "balance", "checkpoint_every", "shard_read")


def run(args: argparse.Namespace) -> int:
    from ..train.config import resolve

    # With --init, the arch and preprocessing not set by a flag or the config file come from the source's
    # metadata (config.init_defaults).
    cfg = resolve(args.recipe, args.config, {k: getattr(args, k) for k in FLAG_KEYS})
    summary = _train_reporting_peer_failures(cfg, args.resume, args.reprobe)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if args.json:
        print(json.dumps(summary))  # train()'s order: the files, the results, then the run's other figures
        return 0
    top1 = summary["top1"]
    print(f"held-out top-1 {100 * top1:.2f}%, top-5 {100 * summary['top5']:.2f}% after {summary['epochs']} epochs, "
          f"{summary['wall_s']:.0f} s" if top1 is not None else "no epoch trained")
    if summary["skipped_files"]:
        print(f"skipped {len(summary['skipped_files'])} unreadable file(s):")
        for s in summary["skipped_files"]:
            print(f"  {s['file']}: {s['error']}")
    print(f"weights: {summary['weights']}")
    print(f"metrics: {summary['metrics']}")
    print(f"plot:    {summary['plot']}")
    print(f"checkpoint: {summary['checkpoint']} (continue with --resume auto)")
    sys.stdout.flush()
    return 0


def _train_reporting_peer_failures(cfg, resume, reprobe=False):
    """Runs training; a failure of the distributed job ends in one line that says how to continue.

    Under torchrun, when one worker dies the agent sends SIGTERM to the others, and a worker whose collective is
    already under way sees it fail instead (gloo: RuntimeError "Connection reset by peer"; NCCL: DistBackendError).
    Either way the last complete checkpoint is intact (atomic writes), so the message points at it.
    """
    import torch.distributed as dist

    from ..errors import UserError, one_line
    from ..train.loop import train

    under_torchrun = "RANK" in os.environ
    resume_hint = f"the last complete checkpoint is {cfg.out}/last.pt; continue with --resume auto"

    def terminated(signum, frame):
        # Written and exited from the handler itself: an exception raised here could land inside a library's
        # clean-up and be swallowed. Skipping clean-up loses nothing: every file is written atomically.
        why = " (under torchrun: another worker failed or the job was cancelled)" if under_torchrun else ""
        os.write(2, f"googlenet train: error: stopped by {signal.Signals(signum).name}{why}; {resume_hint}\n".encode())
        os._exit(2)

    previous = signal.signal(signal.SIGTERM, terminated)
    failed = True
    try:
        summary = train(cfg, resume=resume, reprobe=reprobe)
        failed = False
        return summary
    except RuntimeError as e:
        text = one_line(e)
        transport = isinstance(e, dist.DistBackendError) or any(
            word in text for word in ("gloo", "NCCL", "Connection reset", "Connection closed", "peer", "timed out"))
        if not (under_torchrun and transport):
            raise
        raise UserError(f"a distributed worker failed or lost its connection ({text[:160]}); {resume_hint}") from None
    finally:
        # A failing torchrun worker is about to print its one error line: torchrun's SIGTERM must not cut it short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN if failed and under_torchrun else previous)
