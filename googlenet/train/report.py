"""What a run leaves besides checkpoints: metrics.csv (one row per epoch) and curves.png (matplotlib, Agg)."""

from __future__ import annotations

import csv
import io
import os

from ..fileio import atomic_path, atomic_write_text

COLUMNS = ("epoch", "lr", "train_loss", "train_top1", "eval_loss", "top1", "top5", "images", "eval_images",
           "images_per_s", "epoch_s", "skipped", "nonfinite_steps")


def write_metrics(path: str | os.PathLike, history: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows({k: ("" if row.get(k) is None else row[k]) for k in COLUMNS} for row in history)
    atomic_write_text(path, buf.getvalue())


def write_plot(path: str | os.PathLike, history: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss (main + 0.3 x aux, smoothed)")
    ev = [(r["epoch"], r["eval_loss"], r["top1"], r["top5"]) for r in history if r.get("top1") is not None]
    if ev:
        ax1.plot([e[0] for e in ev], [e[1] for e in ev], "s-", label="held-out loss")
        ax2.plot([e[0] for e in ev], [100 * e[2] for e in ev], "s-", label="held-out top-1")
        ax2.plot([e[0] for e in ev], [100 * e[3] for e in ev], "^-", label="held-out top-5")
    ax2.plot(epochs, [100 * r["train_top1"] for r in history], "o-", label="train top-1 (augmented)")
    ax1.set_xlabel("epoch"), ax1.set_ylabel("loss"), ax1.legend(), ax1.grid(alpha=0.3)
    ax2.set_xlabel("epoch"), ax2.set_ylabel("accuracy (%)"), ax2.legend(), ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
