"""Per-class accuracy and the confusion matrix of an evaluation (``googlenet eval --report``): CSV and PNG."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from ..fileio import atomic_path, atomic_write_text, ensure_dir


def per_class_rows(confusion: torch.Tensor, class_names: list[str]) -> list[dict]:
    """One row per class: images, correct, accuracy (None for a class with no image), most confused with."""
    rows = []
    for i, name in enumerate(class_names):
        total = int(confusion[i].sum())
        off = confusion[i].clone()
        off[i] = 0
        rows.append({"class": name, "images": total, "correct": int(confusion[i, i]),
                     "accuracy": int(confusion[i, i]) / total if total else None,
                     "most_confused_with": class_names[int(off.argmax())] if int(off.sum()) else ""})
    return rows


def write_report(confusion: torch.Tensor, class_names: list[str], out: str | Path, title: str) -> dict:
    """OUT/per_class.csv, OUT/confusion.csv (rows: true class, columns: predicted) and OUT/confusion.png."""
    out = ensure_dir(out)
    rows = per_class_rows(confusion, class_names)
    _write_csv(out / "per_class.csv", list(rows[0]), [list(r.values()) for r in rows])
    _write_csv(out / "confusion.csv", ["true \\ predicted", *class_names],
               [[name, *counts] for name, counts in zip(class_names, confusion.tolist())])
    _plot(confusion, class_names, out / "confusion.png", title)
    return {"per_class": str(out / "per_class.csv"), "confusion_csv": str(out / "confusion.csv"),
            "confusion_png": str(out / "confusion.png"), "classes": rows}


def _write_csv(path: Path, header: list, rows: list[list]) -> None:
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    atomic_write_text(path, buf.getvalue())


def _plot(confusion: torch.Tensor, class_names: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(class_names)
    rates = confusion.double() / confusion.sum(1, keepdim=True).clamp(min=1)  # row-normalised: recall per class
    side = min(2 + 0.45 * n, 40)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ticks, names = (range(n), class_names) if n <= 60 else ([], [])  # beyond 60 the names overlap into noise
    ax.set_xticks(ticks, names, rotation=90, fontsize=8)
    ax.set_yticks(ticks, names, fontsize=8)
    if n <= 20:
        for i, j in confusion.nonzero().tolist():
            ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
