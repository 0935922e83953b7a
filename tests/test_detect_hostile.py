"""Bad detection data and bad results files: each is one line on stderr and exit code 2 from ``googlenet detect
eval`` (never a traceback, never an entity expanded or an external file read), or, for a few bad objects in a large
set, a skip with a count. Cases are tables: (name, how the good files are broken, what the line must say)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from googlenet.cli import main
from tests.voc_fixture import make_coco, make_voc, voc_xml

BOMB = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'
                  for i in range(1, 10))
        + ']><annotation><filename>&lol9;</filename></annotation>')
EXTERNAL = ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            '<annotation><filename>&xxe;</filename><size><width>40</width><height>40</height></size></annotation>')


def _voc(root: Path) -> Path:
    return make_voc(root / "VOC", {"a": (40, 40, [("cat", 2, 2, 20, 20)]), "b": (40, 40, [("dog", 5, 5, 30, 30)])},
                    {"trainval": ["a", "b"], "test": ["a", "b"]})


def _xml(name):
    return lambda voc: (voc / "Annotations" / "a.xml").write_text(name)


def _box(x1, y1, x2, y2):
    return _xml(voc_xml("a.jpg", 40, 40, [("cat", x1, y1, x2, y2)]))


def _test_only(xml):
    def change(voc):
        (voc / "Annotations" / "c.xml").write_text(xml)
        (voc / "JPEGImages" / "c.jpg").write_bytes((voc / "JPEGImages" / "a.jpg").read_bytes())
        (voc / "ImageSets" / "Main" / "test.txt").write_text("a\nc\n")
    return change


def _fifo(voc):
    (voc / "Annotations" / "a.xml").unlink()
    os.mkfifo(voc / "Annotations" / "a.xml")


VOC_CASES = [
    ("xml bomb", _xml(BOMB), "a.xml: refused"),
    ("external entity", _xml(EXTERNAL), "a.xml: refused"),
    ("malformed xml", _xml("<annotation><object><name>cat</name>"), "a.xml: malformed XML"),
    ("not xml", _xml("\x00\x01binary"), "a.xml: malformed XML"),
    ("xmax < xmin", _box(30, 2, 10, 20), "a.xml: object 1 (cat): empty box"),
    ("outside the image", _box(2, 2, 90, 20), "outside its 40x40 image"),
    ("not a number", _box(2, "two", 20, 20), "coordinates not finite numbers"),
    ("annotation a fifo", _fifo, "a.xml: not a regular file"),
    ("missing image", lambda voc: (voc / "JPEGImages" / "b.jpg").unlink(), "image for 'b' not found"),
    ("missing annotation", lambda voc: (voc / "Annotations" / "b.xml").unlink(), "annotation for 'b' not found"),
    ("unknown class in the test split", _test_only(voc_xml("c.jpg", 40, 40, [("zebra", 1, 1, 9, 9)])),
     "c.xml: unknown class 'zebra'"),
    ("missing split", lambda voc: (voc / "ImageSets" / "Main" / "test.txt").unlink(), "split 'test' not found"),
    ("id leaves the folder", lambda voc: (voc / "ImageSets" / "Main" / "test.txt").write_text("../../etc/x\n"),
     "bad image id"),
]


def _run(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.mark.parametrize("name,change,expected", VOC_CASES, ids=[c[0] for c in VOC_CASES])
def test_bad_voc_data_is_one_line(tmp_path, capsys, name, change, expected):
    voc = _voc(tmp_path)
    change(voc)
    (tmp_path / "res").mkdir()
    rc, out, err = _run(["detect", "eval", "--detections", str(tmp_path / "res"), "--data", str(voc), "--json"],
                        capsys)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("googlenet detect: error: ") and expected in err, err
    assert "root:" not in err  # /etc/passwd was not read into a message


def test_oversized_annotation_is_refused_before_reading(tmp_path, capsys, monkeypatch):
    import googlenet.detect.data as data

    voc = _voc(tmp_path)
    monkeypatch.setattr(data, "MAX_XML_BYTES", 64)
    (tmp_path / "res").mkdir()
    rc, _, err = _run(["detect", "eval", "--detections", str(tmp_path / "res"), "--data", str(voc)], capsys)
    assert rc == 2 and "a.xml: file too large" in err and err.count("\n") == 1


def _coco(tmp_path, images=None, anns=None):
    images = images or {1: ("a.jpg", 40, 40), 2: ("b.jpg", 40, 40)}
    anns = anns if anns is not None else [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}]
    return make_coco(tmp_path / "inst.json", tmp_path / "img", images, [(1, "cat")], anns)


def test_bad_coco_data_is_one_line(tmp_path, capsys):
    path = _coco(tmp_path)
    (tmp_path / "res.json").write_text("[]")
    argv = ["detect", "eval", "--detections", str(tmp_path / "res.json"), "--data", str(path), "--images",
            str(tmp_path / "img")]
    (tmp_path / "img" / "b.jpg").unlink()
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and "image 2 not found" in err and err.count("\n") == 1
    path = _coco(tmp_path, anns=[{"id": 9, "image_id": 5, "category_id": 1, "bbox": [2, 2, 10, 10]}])
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and "annotation 9: names image 5, which is not in 'images'" in err and err.count("\n") == 1
    path.write_text('{"images": [}')
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and "inst.json: not JSON" in err and err.count("\n") == 1
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "/etc/passwd"}], "categories": []}))
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and "leaves the images folder" in err


def test_a_few_bad_objects_in_a_large_set_are_skipped(tmp_path, capsys):
    images = {f"{i:03d}": (40, 40, [("cat", 2, 2, 20, 20)]) for i in range(150)}
    images["009"] = (40, 40, [("cat", 2, 2, "x", 20)])
    voc = make_voc(tmp_path / "VOC", images, {"test": list(images)})
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "comp4_det_test_cat.txt").write_text("000 0.9 2 2 20 20\n")
    rc, out, err = _run(["detect", "eval", "--detections", str(tmp_path / "res"), "--data", str(voc), "--json"],
                        capsys)
    assert rc == 0 and json.loads(out.splitlines()[-1])["images"] == 150
    assert err.count("\n") == 1 and err.startswith("googlenet detect: warning: ")
    assert "skipped 1 bad object(s) of 150: " in err and "009.xml: object 1 (cat): coordinates not finite" in err


RESULT_CASES = [
    ("too few fields", "a 0.9 1 1 20\n", "line 1: expected 'image score xmin ymin xmax ymax', got 5 fields"),
    ("not a number", "a 0.9 1 1 20 20\nb high 1 1 20 20\n", "line 2: score and box must be numbers"),
    ("not finite", "a nan 1 1 20 20\n", "line 1: score and box must be finite"),
    ("inverted box", "a 0.9 30 1 20 20\n", "line 1: xmax < xmin"),
    ("unknown image", "\n\nzzz 0.9 1 1 20 20\n", "line 3: image 'zzz' is not in"),
    ("not text", b"\xff\xfe\x00a 0.9", "not UTF-8 text"),
]


@pytest.mark.parametrize("name,text,expected", RESULT_CASES, ids=[c[0] for c in RESULT_CASES])
def test_bad_voc_results_rows_are_refused_with_the_line(tmp_path, capsys, name, text, expected):
    voc = _voc(tmp_path)
    res = tmp_path / "res"
    res.mkdir()
    f = res / "comp4_det_test_cat.txt"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    rc, _, err = _run(["detect", "eval", "--detections", str(res), "--data", str(voc)], capsys)
    assert rc == 2 and err.count("\n") == 1 and "comp4_det_test_cat.txt" in err and expected in err, err


COCO_RESULT_CASES = [
    ("not a list", {"a": 1}, "expected a JSON list"),
    ("missing score", [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}], "entry 0: needs"),
    ("negative width", [{"image_id": 1, "category_id": 1, "bbox": [0, 0, -5, 5], "score": 1}], "entry 0: bbox"),
    ("unknown image", [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1},
                       {"image_id": 77, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1}], "entry 1: image_id 77"),
    ("unknown category", [{"image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 1}],
     "entry 0: unknown category_id 3"),
]


@pytest.mark.parametrize("name,doc,expected", COCO_RESULT_CASES, ids=[c[0] for c in COCO_RESULT_CASES])
def test_bad_coco_results_are_refused_with_the_entry(tmp_path, capsys, name, doc, expected):
    path = _coco(tmp_path)
    (tmp_path / "res.json").write_text(json.dumps(doc))
    rc, _, err = _run(["detect", "eval", "--detections", str(tmp_path / "res.json"), "--data", str(path),
                       "--images", str(tmp_path / "img")], capsys)
    assert rc == 2 and err.count("\n") == 1 and expected in err, err


def test_eval_without_the_detector_module_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "googlenet.detect.detector", None)  # as if this build lacked it
    voc = _voc(tmp_path)
    rc, _, err = _run(["detect", "eval", "--weights", str(tmp_path / "w.safetensors"), "--data", str(voc)], capsys)
    assert rc == 2 and err.count("\n") == 1 and "--detections" in err


def test_eval_with_weights_runs_the_detector_and_writes_results(tmp_path, capsys, monkeypatch):
    """--weights through a stand-in googlenet.detect.detector (the real one is trained elsewhere): each image's
    ground truth detected, plus one false positive; the results files it writes score the same on re-reading."""
    import sys
    import types

    import numpy as np

    from googlenet.detect.data import load_rgb, read_voc

    voc = _voc(tmp_path)
    truth = {tuple(load_rgb(img).ravel()[:64].tolist()): img for img in read_voc(voc, "test").images}

    class Fake:
        classes = ["cat", "dog"]
        last_timings = {"proposals": 0.0, "features": 0.0, "scoring": 0.0}

        def detect(self, rgb):
            img = truth[tuple(rgb.ravel()[:64].tolist())]
            return (np.concatenate([img.boxes, [[0, 0, 5, 5]]]), np.concatenate([img.labels, [0]]),
                    np.array([0.9] * len(img.boxes) + [0.95]))

    module = types.ModuleType("googlenet.detect.detector")
    module.load_detector = lambda path: Fake()
    monkeypatch.setitem(sys.modules, "googlenet.detect.detector", module)
    argv = ["detect", "eval", "--weights", "w.safetensors", "--data", str(voc), "--json",
            "--write-results", str(tmp_path / "out")]
    rc, out, err = _run(argv, capsys)
    assert rc == 0, err
    got = json.loads(out.splitlines()[-1])
    # cat: the two FPs (0.95, one an image) come first, then the one cat: precision 1/3 at recall 1 -> VOC12 AP
    # 1/3; dog: found with no FP before it -> 1.
    assert got["ap"]["voc12"] == {"cat": pytest.approx(1 / 3), "dog": 1.0} and got["detections"] == 4
    assert set(got["seconds_per_image"]) == {"total", "proposals", "features", "scoring"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "coco_results.json", "comp4_det_test_cat.txt", "comp4_det_test_dog.txt"]
    rc, out2, _ = _run(["detect", "eval", "--detections", str(tmp_path / "out"), "--data", str(voc), "--json"], capsys)
    again = json.loads(out2.splitlines()[-1])
    assert rc == 0 and again["ap"] == got["ap"]
    rc, _, err = _run(argv[:3] + ["a", "--weights", "b"] + argv[4:6], capsys)
    assert rc == 2 and "cannot ensemble" in err and err.count("\n") == 1
