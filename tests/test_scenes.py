"""The offline scene set: deterministic to the byte, readable as VOC and as COCO with the same boxes, and sane."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from googlenet.detect.data import load_rgb, read_coco, read_voc
from googlenet.detect.scenes import CLASS_NAMES, MAX_OBJECT, MIN_OBJECT, make_scenes


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_scenes(tmp_path):
    a = make_scenes(tmp_path / "a", seed=3, n_train=12, n_test=6, size=160)
    b = make_scenes(tmp_path / "b", seed=3, n_train=12, n_test=6, size=160)
    c = make_scenes(tmp_path / "c", seed=4, n_train=12, n_test=6, size=160)
    da, db, dc = _digest(a.parent), _digest(b.parent), _digest(c.parent)
    assert da == db and len(da) == 2 * 18 + 4 + 2
    assert da["VOC2007/JPEGImages/000001.jpg"] != dc["VOC2007/JPEGImages/000001.jpg"]
    # a second run into the same folder replaces the set and leaves no temporary folder behind
    make_scenes(tmp_path / "a", seed=3, n_train=12, n_test=6, size=160)
    assert _digest(a.parent) == da and sorted(p.name for p in (tmp_path / "a").iterdir()) == ["VOC2007", "coco"]


def test_voc_and_coco_views_agree_and_objects_are_sane(tmp_path):
    voc = make_scenes(tmp_path, seed=0, n_train=20, n_test=10, size=192)
    ids = lambda s: (voc / "ImageSets" / "Main" / f"{s}.txt").read_text().split()  # noqa: E731
    assert ids("train") + ids("val") == ids("trainval") and len(ids("train")) == 16 and len(ids("test")) == 10
    assert not set(ids("trainval")) & set(ids("test"))
    for split in ("trainval", "test"):
        v = read_voc(voc, split)
        c = read_coco(tmp_path / "coco" / f"instances_{split}.json", voc / "JPEGImages")
        assert c.classes == CLASS_NAMES
        assert set(v.classes) <= set(CLASS_NAMES)
        for iv, ic in zip(v.images, c.images):
            assert (iv.path, iv.width, iv.height, iv.coco_id) == (ic.path, ic.width, ic.height, ic.coco_id)
            np.testing.assert_array_equal(iv.boxes, ic.boxes)
            assert [v.classes[k] for k in iv.labels] == [c.classes[k] for k in ic.labels]
            assert 1 <= len(iv.boxes) <= 4
            rgb = load_rgb(iv)
            assert rgb.shape == (iv.height, iv.width, 3) and 144 <= iv.height <= 192 and iv.width == 192
            for x1, y1, x2, y2 in iv.boxes:
                assert 0 <= x1 < x2 <= iv.width and 0 <= y1 < y2 <= iv.height
                assert max(x2 - x1, y2 - y1) <= MAX_OBJECT and max(x2 - x1, y2 - y1) >= MIN_OBJECT * 0.5
                # the object stands out from the scene's background: its box is not flat
                assert rgb[int(y1):int(y2), int(x1):int(x2)].std() > 5


def test_cli(tmp_path, capsys):
    from googlenet.cli import main

    assert main(["scenes", "--out", str(tmp_path), "--train", "4", "--test", "2", "--size", "128", "--seed", "1",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["classes"] == CLASS_NAMES and Path(out["voc"]).is_dir() and Path(out["coco_test"]).is_file()
    assert main(["scenes", "--out", str(tmp_path), "--size", "20"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--size" in err
