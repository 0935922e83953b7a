"""Detection data as people download it: PASCAL VOC year folders (ILSVRC DET uses the same XML) and COCO instances JSON.

Boxes everywhere in googlenet.detect are float32 (N, 4) xyxy in 0-based continuous pixel coordinates. A VOC box
(xmin, ymin, xmax, ymax) counts pixels from 1, both ends included, so it reads as (xmin - 1, ymin - 1, xmax, ymax);
a COCO bbox [x, y, w, h] is already continuous and reads as (x, y, x + w, y + h).

Every file is read through googlenet.fileio's bounded readers; XML is parsed by defusedxml (no entity expansion, no
external references: an XML bomb or an external entity is refused). A file-level problem (malformed XML, a missing
image, an unknown class when the classes are given) is one ``UserError`` line naming the file. Bad objects (a box
with xmax < xmin, outside its image, not a number; a COCO annotation naming an image that is not listed) are
skipped with a warning that counts them and names the first few when they are at most 1% of the objects (a few bad
objects in a large set, as real datasets have); more than that is a ``UserError`` naming the first.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence
from xml.etree.ElementTree import ParseError

import numpy as np

from ..errors import UserError, one_line
from ..fileio import MiB, Unreadable, byte_limit, printable, read_bounded

# A VOC annotation is about 1 KB; an ILSVRC DET one a few KB. Nothing legitimate comes near this.
MAX_XML_BYTES = 16 * MiB
# COCO's instances_train2017.json is 448 MB.
ANNOTATION_BYTES_ENV = "GOOGLENET_MAX_ANNOTATION_BYTES"
DEFAULT_MAX_ANNOTATION_BYTES = 1024 * MiB
# Bad objects are skipped (with a warning) while they are at most this share of the objects read.
SKIP_FRACTION = 0.01
# A box may stick out of its image by this many pixels (rounding in some tools' exports); it is then clipped.
EDGE_TOLERANCE = 1.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPEG", ".JPG", ".PNG")


class DataWarning(UserWarning):
    """Bad objects skipped while reading a detection set."""


@dataclass(frozen=True)
class DetectionImage:
    image_id: str  # VOC: the file stem from ImageSets; COCO: str(image id)
    path: Path  # the image file
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float32 xyxy, 0-based continuous pixels
    labels: np.ndarray  # (N,) int64, index into DetectionSet.classes
    difficult: np.ndarray  # (N,) bool; COCO: iscrowd
    coco_id: int  # COCO image id; VOC: the 1-based index in the split
    truncated: Optional[np.ndarray] = None  # (N,) bool, VOC's flag (None for COCO); no evaluator uses it


@dataclass
class DetectionSet:
    classes: list[str]
    images: list[DetectionImage]
    kind: str  # "voc" | "coco"
    name: str
    category_ids: list[int] = field(default_factory=list)  # COCO category id of each class; empty: 1..C

    def __len__(self) -> int:
        return len(self.images)

    def category_id(self, label: int) -> int:
        """The COCO category id of class index ``label`` (the file's own ids for COCO data, else label + 1)."""
        return self.category_ids[label] if self.category_ids else int(label) + 1

    def by_id(self) -> dict[str, DetectionImage]:
        return {img.image_id: img for img in self.images}


class _BadObjects:
    """Collects bad objects; at the end either warns (a few) or raises (too many)."""

    def __init__(self, what: str):
        self.what, self.bad, self.total = what, [], 0

    def add(self, where: str) -> None:
        self.bad.append(where)

    def finish(self) -> None:
        if not self.bad:
            return
        if len(self.bad) > SKIP_FRACTION * max(self.total, 1):
            raise UserError(self.bad[0] + (f" (and {len(self.bad) - 1} more bad objects)" if len(self.bad) > 1 else ""))
        first = "; ".join(self.bad[:3])
        warnings.warn(f"{self.what}: skipped {len(self.bad)} bad object(s) of {self.total}: {first}"
                      + (" ..." if len(self.bad) > 3 else ""), DataWarning, stacklevel=3)


def _read_user_file(path: Path, what: str, limit: Optional[int] = None) -> bytes:
    """The file's bytes within ``limit`` (default: the annotation bound, $GOOGLENET_MAX_ANNOTATION_BYTES)."""
    env = None if limit is not None else ANNOTATION_BYTES_ENV
    limit = byte_limit(ANNOTATION_BYTES_ENV, DEFAULT_MAX_ANNOTATION_BYTES) if limit is None else limit
    try:
        return read_bounded(path, limit=limit, env=env)
    except Unreadable as e:
        raise UserError(f"{what} {printable(path)}: {e}") from None


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file within the annotation bound; unreadable or not UTF-8 is one UserError naming ``what``."""
    try:
        return _read_user_file(path, what).decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} {printable(path)}: not UTF-8 text") from None


def _check_box(box: Sequence[float], width: int, height: int) -> tuple[Optional[np.ndarray], str]:
    """(box clipped to the image, "") or (None, why it is bad)."""
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box):
        return None, "coordinates not finite numbers"
    if x2 <= x1 or y2 <= y1:
        return None, f"empty box (xmax < xmin or ymax < ymin): {x1:g},{y1:g},{x2:g},{y2:g} (0-based)"
    t = EDGE_TOLERANCE
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        return None, f"box {x1:g},{y1:g},{x2:g},{y2:g} (0-based) outside its {width}x{height} image"
    clipped = np.array([max(x1, 0.0), max(y1, 0.0), min(x2, width), min(y2, height)], np.float32)
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None, f"box {x1:g},{y1:g},{x2:g},{y2:g} (0-based) outside its {width}x{height} image"
    return clipped, ""


def _pack(boxes: list, labels: list, difficult: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64).reshape(-1),
            np.array(difficult, bool).reshape(-1))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image file's header (for annotations that leave the size out)."""
    import io

    from PIL import Image

    from ..fileio import read_image_file
    try:
        data = read_image_file(path)
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF rotated by 90 degrees: load_image transposes it
                w, h = h, w
            return w, h
    except Unreadable as e:
        raise UserError(f"image {printable(path)}: {e}") from None
    except Exception as e:  # PIL.UnidentifiedImageError and friends
        raise UserError(f"image {printable(path)}: not an image ({one_line(e, 200)})") from None


# --- PASCAL VOC ------------------------------------------------------------------------------------------------------

def _parse_xml(path: Path):
    import defusedxml.ElementTree as DET
    from defusedxml import DefusedXmlException

    data = _read_user_file(path, "annotation", MAX_XML_BYTES)
    try:
        return DET.fromstring(data)
    except DefusedXmlException as e:  # entity declarations (XML bombs), external entities, DTDs
        raise UserError(f"annotation {printable(path)}: refused: {one_line(e, 200)}") from None
    except ParseError as e:
        raise UserError(f"annotation {printable(path)}: malformed XML ({one_line(e, 200)})") from None


def _text(node, tag: str, path: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise UserError(f"annotation {printable(path)}: missing <{tag}>")
    return child.text.strip()


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _voc_image_path(root: Path, image_id: str, filename: Optional[str]) -> Path:
    folder = root / "JPEGImages"
    if filename and Path(filename).name == filename and (folder / filename).exists():
        return folder / filename
    for suffix in IMAGE_SUFFIXES:
        p = folder / f"{image_id}{suffix}"
        if p.exists():
            return p
    raise UserError(f"image for {image_id!r} not found in {printable(folder)}")


def _read_split_ids(root: Path, split: str) -> list[str]:
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.exists():
        raise UserError(f"split {split!r} not found: {printable(path)} (a VOC year folder holds "
                        f"Annotations/, JPEGImages/ and ImageSets/Main/<split>.txt)")
    ids = [line.split()[0] for line in read_text(path, "image set").splitlines() if line.strip()]
    for i in ids:
        if "/" in i or "\\" in i or i in (".", ".."):
            raise UserError(f"image set {printable(path)}: bad image id {i!r}")
    if not ids:
        raise UserError(f"image set {printable(path)} lists no images")
    return ids


def read_voc(root: str | Path, split: str, classes: Optional[Sequence[str]] = None) -> DetectionSet:
    """A VOC year folder (e.g. VOCdevkit/VOC2007) for one split. ``classes``: the class list to use (take it from
    the training set when reading a test split); an object of another class is then refused. Without it, the
    classes are the sorted names found in this split."""
    root = Path(root)
    if not (root / "Annotations").is_dir():
        raise UserError(f"not a VOC year folder (no Annotations/): {printable(root)}")
    ids = _read_split_ids(root, split)
    records, bad = [], _BadObjects(f"VOC {printable(root)} {split}")
    for image_id in ids:
        xml_path = root / "Annotations" / f"{image_id}.xml"
        if not xml_path.exists():
            raise UserError(f"annotation for {image_id!r} not found: {printable(xml_path)}")
        ann = _parse_xml(xml_path)
        path = _voc_image_path(root, image_id, ann.findtext("filename"))
        size = ann.find("size")
        w, h = (int(_number(size.findtext(t) or "0") or 0) if size is not None else 0 for t in ("width", "height"))
        if w <= 0 or h <= 0:  # some ILSVRC and hand-made files leave the size out or write 0
            w, h = image_size(path)
        objects = []
        for k, obj in enumerate(ann.findall("object")):
            bad.total += 1
            name = _text(obj, "name", xml_path)
            bb = obj.find("bndbox")
            raw = [_number(bb.findtext(t) or "") if bb is not None else math.nan
                   for t in ("xmin", "ymin", "xmax", "ymax")]
            box, why = _check_box([raw[0] - 1, raw[1] - 1, raw[2], raw[3]], w, h)
            if box is None:
                bad.add(f"{printable(xml_path)}: object {k + 1} ({name}): {why}")
                continue
            difficult = _number(obj.findtext("difficult") or "0") == 1
            truncated = _number(obj.findtext("truncated") or "0") == 1
            objects.append((name, box, difficult, truncated))
        records.append((image_id, path, w, h, objects))
    bad.finish()

    if classes is None:
        classes = sorted({o[0] for *_, objects in records for o in objects})
        if not classes:
            raise UserError(f"VOC {printable(root)} {split}: no objects, so no class names")
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    images = []
    for n, (image_id, path, w, h, objects) in enumerate(records, 1):
        for name, *_ in objects:
            if name not in index:
                raise UserError(f"annotation {printable(root / 'Annotations' / (image_id + '.xml'))}: unknown class "
                                f"{name!r} (the classes are {', '.join(classes)})")
        boxes, labels, diff = _pack([o[1] for o in objects], [index[o[0]] for o in objects], [o[2] for o in objects])
        truncated = np.array([o[3] for o in objects], bool).reshape(-1)
        images.append(DetectionImage(image_id, path, w, h, boxes, labels, diff, n, truncated))
    return DetectionSet(classes, images, "voc", f"{root.name}/{split}")


# --- COCO ------------------------------------------------------------------------------------------------------------

def read_coco(json_path: str | Path, images_dir: str | Path, classes: Optional[Sequence[str]] = None) -> DetectionSet:
    """COCO instances JSON and its images folder. The classes are the categories sorted by id; ``classes`` (names)
    checks that they are the ones expected, in that order."""
    json_path, images_dir = Path(json_path), Path(images_dir)
    data = _read_user_file(json_path, "annotations")
    where = f"annotations {printable(json_path)}"
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise UserError(f"{where}: not JSON ({one_line(e, 200)})") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "categories")):
        raise UserError(f"{where}: not COCO instances JSON (needs lists 'images' and 'categories')")
    try:
        cats = sorted((int(c["id"]), str(c["name"])) for c in doc["categories"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{where}: a category without an integer 'id' and a 'name'") from None
    names = [n for _, n in cats]
    if classes is not None and list(classes) != names:
        raise UserError(f"{where}: categories {names} differ from the expected classes {list(classes)}")
    cat_index = {cid: i for i, (cid, _) in enumerate(cats)}

    meta = {}
    for im in doc["images"]:
        try:
            iid, fname, w, h = int(im["id"]), str(im["file_name"]), int(im.get("width", 0)), int(im.get("height", 0))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{where}: an image without an integer 'id' and a 'file_name'") from None
        if Path(fname).is_absolute() or ".." in Path(fname).parts:
            raise UserError(f"{where}: image {iid}: file_name {fname!r} leaves the images folder")
        meta[iid] = (fname, w, h)

    objects: dict[int, list] = {iid: [] for iid in meta}
    bad = _BadObjects(where)
    anns = doc.get("annotations", [])
    if not isinstance(anns, list):
        raise UserError(f"{where}: 'annotations' is not a list")
    for k, a in enumerate(anns):
        bad.total += 1
        aid = a.get("id", k) if isinstance(a, dict) else k
        try:
            iid, cid = int(a["image_id"]), int(a["category_id"])
            x, y, bw, bh = (float(v) for v in a["bbox"])
        except (KeyError, TypeError, ValueError):
            bad.add(f"{where}: annotation {aid}: needs image_id, category_id and bbox [x, y, w, h] numbers")
            continue
        if iid not in meta:
            bad.add(f"{where}: annotation {aid}: names image {iid}, which is not in 'images'")
            continue
        if cid not in cat_index:
            bad.add(f"{where}: annotation {aid}: unknown category {cid}")
            continue
        objects[iid].append((x, y, bw, bh, cid, bool(a.get("iscrowd", 0)), aid))

    images = []
    for iid, (fname, w, h) in meta.items():
        path = images_dir / fname
        if not path.exists():
            raise UserError(f"{where}: image {iid} not found: {printable(path)}")
        if w <= 0 or h <= 0:
            w, h = image_size(path)
        boxes, labels, crowd = [], [], []
        for x, y, bw, bh, cid, iscrowd, aid in objects[iid]:
            box, why = _check_box([x, y, x + bw, y + bh], w, h)
            if box is None:
                bad.add(f"{where}: annotation {aid}: {why}")
                continue
            boxes.append(box)
            labels.append(cat_index[cid])
            crowd.append(iscrowd)
        images.append(DetectionImage(str(iid), path, w, h, *_pack(boxes, labels, crowd), iid))
    bad.finish()
    return DetectionSet(names, images, "coco", json_path.stem, [cid for cid, _ in cats])


def read_detection_set(data: str | Path, split: str = "trainval", images: Optional[str | Path] = None,
                       classes: Optional[Sequence[str]] = None) -> DetectionSet:
    """A folder is a VOC year folder (``split`` picks the image set); a .json file is COCO instances, with its
    images in ``images`` (default: the JSON's folder)."""
    data = Path(data)
    if data.suffix.lower() == ".json":
        return read_coco(data, images if images is not None else data.parent, classes)
    if data.is_dir():
        return read_voc(data, split, classes)
    if not data.exists():
        raise UserError(f"detection data not found: {printable(data)}")
    raise UserError(f"detection data {printable(data)}: expected a VOC year folder or a COCO instances .json")


def load_rgb(img: DetectionImage) -> np.ndarray:
    """The image as (H, W, 3) uint8 RGB, EXIF orientation applied, read within the project's file bounds."""
    from ..data.images import BadImage, load_image

    try:
        tensor = load_image(img.path)
    except BadImage as e:
        raise UserError(f"image {printable(img.path)}: {e}") from None
    return np.ascontiguousarray(tensor.permute(1, 2, 0).numpy())


def check_rgb(rgb) -> np.ndarray:
    """The image a detector's ``detect`` takes, (H, W, 3) uint8 RGB, as a C-contiguous array."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"detect takes an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)
