"""Pictures of detections: boxes drawn on an image with class and score, precision-recall curves, and proposal recall
against the number of proposals. Plots use matplotlib's Figure directly (the Agg canvas, no pyplot state), so they
work without a display and from any thread."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..fileio import atomic_path

# matplotlib's tab10, as RGB: one colour per class, repeating after ten.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def draw_boxes(rgb: np.ndarray, boxes: np.ndarray, labels: Sequence[int], scores: Optional[Sequence[float]],
               classes: Sequence[str], *, width: int = 2) -> Image.Image:
    """The image with each box outlined in its class's colour and labelled "class score" (scores None: the class
    alone, for ground truth). Boxes are 0-based continuous xyxy; the outline covers the box's edge pixels."""
    img = Image.fromarray(np.asarray(rgb, np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = range(len(boxes)) if scores is None else np.argsort(np.asarray(scores, np.float64), kind="stable")
    for k in order:  # lowest score first, so the best boxes are drawn on top
        x1, y1, x2, y2 = boxes[k]
        colour = PALETTE[int(labels[k]) % len(PALETTE)]
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=width)
        text = classes[int(labels[k])] + ("" if scores is None else f" {float(scores[k]):.2f}")
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        ty = y1 - th - 3 if y1 - th - 3 >= 0 else y1  # above the box, or inside it at the image's top
        draw.rectangle([x1, ty, x1 + tw + 3, ty + th + 3], fill=colour)
        draw.text((x1 + 2 - left, ty + 1 - top), text, fill=(255, 255, 255), font=font)
    return img


def _axes(figsize: tuple[float, float]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.add_subplot()


def _save(fig, ax, path: str | Path, legend: Optional[str]) -> Path:
    """The figure written to ``path`` as PNG, with a legend at ``legend`` (None: no curves, no legend)."""
    if legend:
        ax.legend(loc=legend, fontsize="small")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def plot_pr(pr: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, *,
            ap: Optional[Mapping[str, float]] = None, title: str = "Precision-recall") -> Path:
    """One precision-recall curve per class ({class: (recall, precision)}), the AP in the legend when given."""
    fig, ax = _axes((6, 5))
    for k, (cls, (rec, prec)) in enumerate(pr.items()):
        label = cls if ap is None or ap.get(cls) is None else f"{cls} (AP {ap[cls]:.3f})"
        colour = np.array(PALETTE[k % len(PALETTE)]) / 255
        ax.plot(np.asarray(rec, float), np.asarray(prec, float), color=colour, label=label, linewidth=1.5)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title)
    ax.grid(alpha=0.3)
    return _save(fig, ax, path, "lower left" if pr else None)


def plot_recall(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, *,
                title: str = "Proposal recall", ylabel: str = "recall at IoU 0.5") -> Path:
    """Recall against the number of proposals per image, one line per method ({method: (counts, recall)}), the
    count axis logarithmic as in the proposal papers."""
    fig, ax = _axes((6, 4.5))
    for k, (method, (counts, recall)) in enumerate(curves.items()):
        colour = np.array(PALETTE[k % len(PALETTE)]) / 255
        ax.plot(np.asarray(counts, float), np.asarray(recall, float), marker="o", markersize=3, color=colour,
                label=method)
    ax.set_xscale("log")
    ax.set(ylim=(0, 1.02), xlabel="proposals per image", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, ax, path, "lower right" if curves else None)
