"""The offline scene set: generated detection scenes, deterministic from a seed, in VOC and COCO layouts.

Each scene is a textured background with 1-4 objects pasted at random scales and positions, some overlapping. The
objects are Fashion-MNIST items from the bundled subset (googlenet/data/embedded.py), six classes that differ in
shape (bag, boot, dress, sandal, trouser, tshirt), each instance tinted a random colour so that colour says nothing
about the class; training scenes take items from the subset's training part, test scenes from its held-out part,
so test objects are unseen instances. Backgrounds are crops of real textures that ship with matplotlib (a hill-shaded
elevation map of the Jacksboro fault, the Grace Hopper photograph) and of procedural ones (fractal noise, stripes,
bricks), flipped and recoloured at random. No scikit-image: its sample images are not installed here.

Layout (what ``read_voc`` / ``read_coco`` read):
    OUT/VOC2007/{Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/{train,val,trainval,test}.txt}
    OUT/coco/instances_{trainval,test}.json (file_name relative to OUT/VOC2007/JPEGImages; image ids are the
    1-based positions in the split, as read_voc numbers them)
Same seed, counts and size -> byte-identical files. The set is written into a temporary folder beside OUT's
sub-folders and moved into place at the end, so an interrupted run never leaves a half-written set under the names.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..fileio import ensure_dir

# Fashion-MNIST labels of the six classes; names sorted, as read_voc orders classes.
CLASSES = {"bag": 8, "boot": 9, "dress": 3, "sandal": 5, "trouser": 1, "tshirt": 0}
CLASS_NAMES = sorted(CLASSES)
MIN_OBJECT, MAX_OBJECT = 32, 120  # longer side of a pasted object, pixels
MAX_OBJECTS = 4
MAX_IOU = 0.3  # objects may overlap, but not hide each other:
MAX_COVER = 0.5  # nor cover more than half of the smaller one's box
TEXTURE_SIDE = 384
JPEG_QUALITY = 90


# --- textures --------------------------------------------------------------------------------------------------------

def _fractal_noise(rng: np.random.Generator, side: int) -> np.ndarray:
    """(side, side) float in [0, 1]: random grids from 4 to 64 cells, upsampled and summed with 1/f weights."""
    out = np.zeros((side, side), np.float32)
    for cells, weight in ((4, 1.0), (8, 0.5), (16, 0.25), (32, 0.125), (64, 0.0625)):
        grid = Image.fromarray(rng.random((cells, cells), dtype=np.float32), "F")
        out += weight * np.asarray(grid.resize((side, side), Image.BICUBIC))
    out -= out.min()
    return out / max(out.max(), 1e-6)


def _colourise(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lo, hi = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    return (lo + gray[..., None] * (hi - lo)).clip(0, 255).astype(np.uint8)


def _bricks(rng: np.random.Generator, side: int) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side]
    bh, bw = int(rng.integers(14, 28)), int(rng.integers(30, 60))
    row = y // bh
    mortar = ((y % bh) < 2) | (((x + (row % 2) * bw // 2) % bw) < 2)
    shade = rng.random((side // bh + 2, side // bw + 3))[row, (x + (row % 2) * bw // 2) // bw]
    gray = np.where(mortar, 0.9, 0.25 + 0.4 * shade) + 0.15 * _fractal_noise(rng, side)
    return _colourise(gray.clip(0, 1), rng)


def _stripes(rng: np.random.Generator, side: int) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 30)
    wave = np.sin((x * np.cos(angle) + y * np.sin(angle)) / period * 2 * np.pi + 4 * _fractal_noise(rng, side))
    return _colourise(0.5 + 0.5 * wave, rng)


def _sample_textures() -> list[np.ndarray]:
    """Real textures shipped with matplotlib: a hill-shaded elevation map and a photograph (empty if absent)."""
    try:
        from matplotlib import cbook, colormaps
        from matplotlib.colors import LightSource

        with np.load(cbook.get_sample_data("jacksboro_fault_dem.npz", asfileobj=False)) as dem:
            z = dem["elevation"].astype(np.float64)
        terrain = LightSource(azdeg=315, altdeg=45).shade(z, cmap=colormaps["gist_earth"], vert_exag=0.05,
                                                          blend_mode="soft")
        photo = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))
    except (ImportError, OSError, KeyError, ValueError):
        return []
    return [(terrain[..., :3] * 255).astype(np.uint8), photo]


def make_textures(seed: int = 1234) -> list[np.ndarray]:
    """The background bank (fixed: it does not depend on the scene seed), each at least TEXTURE_SIDE square."""
    rng = np.random.default_rng(seed)
    bank = []
    for tex in _sample_textures():
        img = Image.fromarray(tex)
        scale = TEXTURE_SIDE / min(img.size)
        bank.append(np.asarray(img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)))
    for _ in range(3):
        bank.append(_colourise(_fractal_noise(rng, TEXTURE_SIDE), rng))
        bank.append(_bricks(rng, TEXTURE_SIDE))
        bank.append(_stripes(rng, TEXTURE_SIDE))
    return bank


# --- scenes ----------------------------------------------------------------------------------------------------------

def _object_pools() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per class (in CLASS_NAMES order) the 28x28 uint8 items for training scenes and for test scenes."""
    from ..data.embedded import load_fashion

    train, held = load_fashion("fashion-mnist-subset")
    pools = []
    for part in (train, held):
        images, labels = part.images.numpy(), part.labels.numpy()
        pools.append([images[labels == CLASSES[name]] for name in CLASS_NAMES])
    return pools[0], pools[1]


def _fits(a: tuple, b: tuple) -> bool:
    """Whether boxes a and b overlap little enough: IoU <= MAX_IOU and at most MAX_COVER of the smaller one."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return True
    inter, area_a, area_b = iw * ih, (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter) <= MAX_IOU and inter / min(area_a, area_b) <= MAX_COVER


def _tint(rng: np.random.Generator) -> np.ndarray:
    """A saturated random colour (HSV with S, V high), so objects stand out from most backgrounds."""
    import colorsys

    h, s, v = rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.75, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32) * 255


def render_scene(rng: np.random.Generator, textures: list[np.ndarray], pool: list[np.ndarray], size: int):
    """(image (H, W, 3) uint8, [(class index, (x1, y1, x2, y2) integer 0-based box)]) for one scene."""
    w, h = size, int(round(size * rng.uniform(0.75, 1.0)))
    tex = textures[int(rng.integers(len(textures)))]
    if tex.shape[0] < h or tex.shape[1] < w:  # scenes larger than the bank's textures
        scale = max(h / tex.shape[0], w / tex.shape[1])
        tex = np.asarray(Image.fromarray(tex).resize((int(np.ceil(tex.shape[1] * scale)),
                                                      int(np.ceil(tex.shape[0] * scale))), Image.BILINEAR))
    y0, x0 = int(rng.integers(0, tex.shape[0] - h + 1)), int(rng.integers(0, tex.shape[1] - w + 1))
    canvas = tex[y0:y0 + h, x0:x0 + w].astype(np.float32)
    if rng.random() < 0.5:
        canvas = canvas[:, ::-1]
    # Lower contrast and brightness, a colour cast: the background's edges stay weaker than the objects' outlines.
    mean = canvas.mean((0, 1))
    canvas = (mean + (canvas - mean) * rng.uniform(0.35, 0.7)) * rng.uniform(0.55, 0.9) + rng.uniform(-20, 20, 3)

    objects: list[tuple[int, tuple[int, int, int, int]]] = []
    largest = min(MAX_OBJECT, int(0.7 * min(w, h)))
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        c = int(rng.integers(len(CLASS_NAMES)))
        item = pool[c][int(rng.integers(len(pool[c])))]
        side = int(rng.integers(MIN_OBJECT, largest + 1))
        aspect = rng.uniform(0.8, 1.25)
        ow, oh = (side, max(8, int(side / aspect))) if aspect >= 1 else (max(8, int(side * aspect)), side)
        gray = np.asarray(Image.fromarray(item).resize((ow, oh), Image.BILINEAR), np.float32) / 255
        if rng.random() < 0.5:
            gray = gray[:, ::-1]
        alpha = np.clip(gray * 6, 0, 1)  # the item's dark background is transparent, its body opaque
        rows, cols = np.flatnonzero(alpha.max(1) >= 0.5), np.flatnonzero(alpha.max(0) >= 0.5)
        if rows.size == 0 or cols.size == 0:
            continue
        for _ in range(10):  # a place that overlaps the others little enough
            px, py = int(rng.integers(0, w - ow + 1)), int(rng.integers(0, h - oh + 1))
            box = (px + int(cols[0]), py + int(rows[0]), px + int(cols[-1]) + 1, py + int(rows[-1]) + 1)
            if all(_fits(box, other) for _, other in objects):
                break
        else:
            continue
        colour = _tint(rng) * (0.45 + 0.55 * gray[..., None])  # shading from the item's own intensities
        region = canvas[py:py + oh, px:px + ow]
        canvas[py:py + oh, px:px + ow] = region * (1 - alpha[..., None]) + colour * alpha[..., None]
        objects.append((c, box))
    return np.ascontiguousarray(canvas.clip(0, 255).astype(np.uint8)), objects


def _voc_xml(image_id: str, w: int, h: int, objects) -> str:
    lines = ["<annotation>", "\t<folder>VOC2007</folder>", f"\t<filename>{image_id}.jpg</filename>",
             "\t<source><database>googlenet offline scenes</database></source>",
             f"\t<size><width>{w}</width><height>{h}</height><depth>3</depth></size>", "\t<segmented>0</segmented>"]
    for c, (x1, y1, x2, y2) in objects:
        lines += ["\t<object>", f"\t\t<name>{CLASS_NAMES[c]}</name>", "\t\t<pose>Unspecified</pose>",
                  "\t\t<truncated>0</truncated>", "\t\t<difficult>0</difficult>",
                  f"\t\t<bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>",
                  "\t</object>"]
    return "\n".join(lines + ["</annotation>", ""])


def _coco_json(records) -> str:
    images, anns = [], []
    for n, (image_id, w, h, objects) in enumerate(records, 1):
        images.append({"id": n, "file_name": f"{image_id}.jpg", "width": w, "height": h})
        for c, (x1, y1, x2, y2) in objects:
            anns.append({"id": len(anns) + 1, "image_id": n, "category_id": c + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    cats = [{"id": k + 1, "name": name, "supercategory": "fashion"} for k, name in enumerate(CLASS_NAMES)]
    return json.dumps({"info": {"description": "googlenet offline scenes"}, "images": images, "annotations": anns,
                       "categories": cats}, indent=None, separators=(",", ":")) + "\n"


def make_scenes(out: str | os.PathLike, *, seed: int = 0, n_train: int = 240, n_test: int = 120,
                size: int = 192) -> Path:
    """Writes the scene set under ``out`` (see the module docstring); returns the VOC2007 folder.

    n_train scenes make trainval (its first 80% "train", the rest "val"), n_test make "test"."""
    if n_train < 1 or n_test < 1:
        raise ValueError("n_train and n_test must be at least 1")
    if not 2 * MIN_OBJECT <= size <= 1024:
        raise ValueError(f"size must be in {2 * MIN_OBJECT}..1024 pixels, got {size}")
    out = ensure_dir(out)
    textures = make_textures()
    pools = _object_pools()
    tmp = Path(tempfile.mkdtemp(prefix=".scenes.", dir=out))
    try:
        voc = tmp / "VOC2007"
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (voc / sub).mkdir(parents=True)
        (tmp / "coco").mkdir()
        splits = {}
        for split, count, pool, offset in (("trainval", n_train, pools[0], 0), ("test", n_test, pools[1], n_train)):
            records = []
            for k in range(count):
                # One generator per scene: a scene does not change when the other split's count does.
                rng = np.random.default_rng([seed, 0 if split == "trainval" else 1, k])
                image, objects = render_scene(rng, textures, pool, size)
                image_id = f"{offset + k + 1:06d}"
                Image.fromarray(image).save(voc / "JPEGImages" / f"{image_id}.jpg", "JPEG", quality=JPEG_QUALITY)
                h, w = image.shape[:2]
                (voc / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(image_id, w, h, objects))
                records.append((image_id, w, h, objects))
            (tmp / "coco" / f"instances_{split}.json").write_text(_coco_json(records))
            splits[split] = [r[0] for r in records]
        n_fit = max(1, int(round(0.8 * n_train))) if n_train > 1 else 1
        splits["train"], splits["val"] = splits["trainval"][:n_fit], splits["trainval"][n_fit:]
        for split, ids in splits.items():
            (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for name in ("VOC2007", "coco"):
            if (out / name).exists():
                shutil.rmtree(out / name)
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "VOC2007"
