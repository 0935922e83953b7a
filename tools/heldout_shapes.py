"""A held-out rehearsal set for the detector: a VOC year folder of a kind the offline scenes never show.

Issue 25's held-out check trains the default recipe on an unseen VOC-layout set of about 300 images (320x240 to
400x300, about 6 classes). This writes such a set to rehearse it: six filled shapes (disc, ring, square, triangle,
star, cross) drawn with PIL at random sizes, rotations and colours, on backgrounds unlike the scenes' textures
(smooth colour fields with blobs and lines), some objects cut by the image border (``truncated``) and a few tiny
ones marked ``difficult``, exactly as the devkit's XML has them.

    python tools/heldout_shapes.py --out /tmp/shapes --seed 7      # writes /tmp/shapes/VOC2007
    googlenet detect train --data /tmp/shapes/VOC2007 --out /tmp/shapes-run --json
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("cross", "disc", "ring", "square", "star", "triangle")


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A smooth two-colour field, then blurred blobs and thin lines: clutter with edges, no objects."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    t = (np.cos(rng.uniform(0, 2 * np.pi)) * xx / w + np.sin(rng.uniform(0, 2 * np.pi)) * yy / h + 1) / 2
    img = Image.fromarray((a * t[..., None] + b * (1 - t[..., None])).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(10, 60)
        draw.ellipse((x - r, y - r * rng.uniform(0.3, 1), x + r, y + r), fill=tuple(int(v) for v in rng.uniform(30, 220, 3)))
    img = img.filter(ImageFilter.GaussianBlur(6))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 7))):
        pts = [(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(2)]
        draw.line(pts, fill=tuple(int(v) for v in rng.uniform(0, 255, 3)), width=int(rng.integers(1, 4)))
    return img


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        corners = [(angle + math.pi / 4 + k * math.pi / 2, r) for k in range(4)]
    elif kind == "triangle":
        corners = [(angle + k * 2 * math.pi / 3, r) for k in range(3)]
    elif kind == "star":
        corners = [(angle + k * math.pi / 5, r if k % 2 == 0 else 0.45 * r) for k in range(10)]
    else:  # cross: 12 corners of a plus sign
        s = 0.33 * r
        pts = [(s, r), (s, s), (r, s), (r, -s), (s, -s), (s, -r), (-s, -r), (-s, -s), (-r, -s), (-r, s), (-s, s), (-s, r)]
        c, si = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * si, cy + x * si + y * c) for x, y in pts]
    return [(cx + d * math.cos(a), cy + d * math.sin(a)) for a, d in corners]


def render(rng: np.random.Generator):
    w = int(rng.integers(320, 401))
    h = int(round(w * 0.75))
    img = _background(rng, w, h)
    mask_all = Image.new("L", (w, h), 0)
    objects = []
    for _ in range(int(rng.integers(1, 5))):
        kind = CLASSES[int(rng.integers(len(CLASSES)))]
        r = float(rng.uniform(14, 75))
        cx, cy = float(rng.uniform(-0.3 * r, w + 0.3 * r)), float(rng.uniform(-0.3 * r, h + 0.3 * r))
        mask = Image.new("L", (w, h), 0)
        d = ImageDraw.Draw(mask)
        if kind in ("disc", "ring"):
            ry = r * rng.uniform(0.7, 1.0)
            d.ellipse((cx - r, cy - ry, cx + r, cy + ry), fill=255)
            if kind == "ring":
                d.ellipse((cx - 0.55 * r, cy - 0.55 * ry, cx + 0.55 * r, cy + 0.55 * ry), fill=0)
        else:
            d.polygon(_polygon(kind, cx, cy, r, float(rng.uniform(0, 2 * math.pi))), fill=255)
        m = np.asarray(mask) > 127
        if m.sum() < 100 or (m & (np.asarray(mask_all) > 127)).sum() > 0.3 * m.sum():
            continue
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        x1, y1, x2, y2 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
        colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
        img.paste(Image.new("RGB", (w, h), colour), (0, 0), mask)
        ImageDraw.Draw(mask_all).bitmap((0, 0), mask, fill=255)
        truncated = int(cx - r < 0 or cy - r < 0 or cx + r > w or cy + r > h)
        difficult = int(max(x2 - x1, y2 - y1) < 24)
        objects.append((kind, (x1, y1, x2, y2), truncated, difficult))
    arr = np.asarray(img, np.float32) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8)), objects


def xml(image_id: str, w: int, h: int, objects) -> str:
    out = [f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>",
           f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size><segmented>0</segmented>"]
    for kind, (x1, y1, x2, y2), trunc, diff in objects:
        out.append(f"<object><name>{kind}</name><pose>Unspecified</pose><truncated>{trunc}</truncated>"
                   f"<difficult>{diff}</difficult><bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin>"
                   f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    return "\n".join(out + ["</annotation>\n"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--train", type=int, default=200)
    p.add_argument("--test", type=int, default=100)
    args = p.parse_args()
    voc = Path(args.out) / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[str]] = {"trainval": [], "test": []}
    for k in range(args.train + args.test):
        rng = np.random.default_rng([args.seed, k])
        img, objects = render(rng)
        image_id = f"{k + 1:06d}"
        img.save(voc / "JPEGImages" / f"{image_id}.jpg", quality=90)
        (voc / "Annotations" / f"{image_id}.xml").write_text(xml(image_id, img.width, img.height, objects))
        splits["trainval" if k < args.train else "test"].append(image_id)
    for split, ids in splits.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(i + "\n" for i in ids))
    print(voc)


if __name__ == "__main__":
    main()
