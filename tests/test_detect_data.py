"""The VOC and COCO readers: boxes in the project's 0-based continuous convention, classes from the data, flags."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from googlenet.detect.data import DataWarning, load_rgb, read_coco, read_detection_set, read_voc
from googlenet.errors import UserError
from tests.voc_fixture import make_coco, make_voc


def test_voc_boxes_classes_and_flags(tmp_path):
    root = make_voc(tmp_path / "VOC2007", {
        "000001": (60, 40, [("dog", 1, 1, 60, 40), ("cat", 10, 5, 20, 15, 1)]),
        "000002": (30, 50, [("bird", 3, 4, 10, 12)]),
        "000003": (20, 20, []),
    }, {"trainval": ["000001", "000002", "000003"], "test": ["000002"]})
    ds = read_voc(root, "trainval")
    assert ds.kind == "voc" and ds.classes == ["bird", "cat", "dog"]  # sorted names of the split
    a, b, c = ds.images
    assert (a.image_id, a.width, a.height, a.coco_id) == ("000001", 60, 40, 1)
    # VOC (1, 1, 60, 40) is the whole 60x40 image: (0, 0, 60, 40) in continuous 0-based pixels
    np.testing.assert_array_equal(a.boxes, np.array([[0, 0, 60, 40], [9, 4, 20, 15]], np.float32))
    assert a.boxes.dtype == np.float32 and a.labels.dtype == np.int64
    assert a.labels.tolist() == [2, 1] and a.difficult.tolist() == [False, True]
    assert a.truncated.tolist() == [False, False]
    assert b.labels.tolist() == [0] and c.boxes.shape == (0, 4) and c.labels.shape == (0,)
    assert load_rgb(a).shape == (40, 60, 3) and load_rgb(a).dtype == np.uint8
    test = read_voc(root, "test", classes=ds.classes)
    assert test.classes == ds.classes and [i.image_id for i in test.images] == ["000002"]
    assert read_detection_set(root, "test").images[0].image_id == "000002"


def test_voc_unknown_class_in_test_split(tmp_path):
    root = make_voc(tmp_path / "VOC", {"a": (30, 30, [("zebra", 1, 1, 9, 9)])})
    with pytest.raises(UserError, match=r"a\.xml: unknown class 'zebra'"):
        read_voc(root, "test", classes=["cat", "dog"])


def test_voc_size_missing_read_from_image(tmp_path):
    root = make_voc(tmp_path / "VOC", {"a": (33, 21, [("cat", 2, 2, 8, 8)])})
    xml = root / "Annotations" / "a.xml"
    xml.write_text(xml.read_text().replace("<width>33</width>", "<width>0</width>"))
    assert (read_voc(root, "test").images[0].width, read_voc(root, "test").images[0].height) == (33, 21)


def test_a_few_bad_objects_in_a_large_set_are_skipped_with_a_count(tmp_path):
    images = {f"{i:03d}": (40, 40, [("cat", 2, 2, 20, 20)] * 2) for i in range(60)}
    images["007"] = (40, 40, [("cat", 2, 2, 20, 20), ("cat", 30, 5, 10, 20)])  # xmax < xmin
    root = make_voc(tmp_path / "VOC", images)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = read_voc(root, "test")
    msgs = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(msgs) == 1 and "skipped 1 bad object(s) of 120" in msgs[0] and "007.xml" in msgs[0]
    assert sum(len(i.boxes) for i in ds.images) == 119


def test_coco_reader(tmp_path):
    path = make_coco(tmp_path / "instances.json", tmp_path / "img", {7: ("a.jpg", 50, 40), 3: ("b.png", 20, 30)},
                     [(5, "zebra"), (2, "ant")],
                     [{"id": 1, "image_id": 7, "category_id": 5, "bbox": [1.5, 2, 10, 20], "iscrowd": 0},
                      {"id": 2, "image_id": 7, "category_id": 2, "bbox": [0, 0, 50, 40], "iscrowd": 1}])
    ds = read_coco(path, tmp_path / "img")
    assert ds.kind == "coco" and ds.classes == ["ant", "zebra"]  # categories sorted by id
    a = ds.by_id()["7"]
    assert a.coco_id == 7 and (a.width, a.height) == (50, 40)
    np.testing.assert_array_equal(a.boxes, np.array([[1.5, 2, 11.5, 22], [0, 0, 50, 40]], np.float32))
    assert a.labels.tolist() == [1, 0] and a.difficult.tolist() == [False, True]
    assert ds.by_id()["3"].boxes.shape == (0, 4)
    assert read_detection_set(path, images=tmp_path / "img").classes == ["ant", "zebra"]


# --- results files ---------------------------------------------------------------------------------------------------

def test_voc_results_files_round_trip(tmp_path):
    from googlenet.detect.metrics import evaluate_detections
    from googlenet.detect.results import read_detections, write_voc_results

    root = make_voc(tmp_path / "VOC", {"a": (60, 40, [("dog", 1, 1, 30, 30)]), "b": (50, 50, [("cat", 5, 5, 20, 20)])})
    ds = read_voc(root, "test")
    dets = {"a": (np.array([[0, 0, 30, 30], [10.5, 2.25, 20, 30]], np.float32), np.array([1, 0]), np.array([.9, .25])),
            "b": (np.array([[4, 4, 20, 20]], np.float32), np.array([0]), np.array([.5]))}
    paths = write_voc_results(tmp_path / "res", ds, dets, "test")
    assert [p.name for p in paths] == ["comp4_det_test_cat.txt", "comp4_det_test_dog.txt"]
    # VOC pixels: 0-based (10.5, 2.25, 20, 30) is written 11.5 3.25 20 30; image order, then detection order
    assert paths[0].read_text() == "a 0.25 11.5 3.25 20 30\nb 0.5 5 5 20 20\n"
    assert paths[1].read_text() == "a 0.9 1 1 30 30\n"
    back = read_detections(tmp_path / "res", ds)
    assert sorted(map(tuple, back["a"][0].tolist())) == sorted(map(tuple, dets["a"][0].tolist()))
    assert evaluate_detections(ds, back) == evaluate_detections(ds, dets)


def test_coco_results_round_trip_keeps_the_files_ids(tmp_path):
    from googlenet.detect.metrics import evaluate_detections
    from googlenet.detect.results import read_detections, write_coco_results

    path = make_coco(tmp_path / "instances.json", tmp_path / "img", {7: ("a.jpg", 50, 40), 3: ("b.png", 20, 30)},
                     [(5, "zebra"), (2, "ant")],
                     [{"id": 1, "image_id": 7, "category_id": 5, "bbox": [1.5, 2, 10, 20], "iscrowd": 0},
                      {"id": 2, "image_id": 3, "category_id": 2, "bbox": [0, 0, 10, 10], "iscrowd": 0}])
    ds = read_coco(path, tmp_path / "img")
    dets = {"7": (np.array([[1.5, 2, 11.5, 22]], np.float32), np.array([1]), np.array([.8])),
            "3": (np.array([[0, 0, 10, 10]], np.float32), np.array([0]), np.array([.7]))}
    out = write_coco_results(tmp_path / "res.json", ds, dets)
    rows = json.loads(out.read_text())
    assert rows == [{"image_id": 7, "category_id": 5, "bbox": [1.5, 2.0, 10.0, 20.0], "score": 0.8},
                    {"image_id": 3, "category_id": 2, "bbox": [0.0, 0.0, 10.0, 10.0], "score": 0.7}]
    back = read_detections(out, ds)
    assert evaluate_detections(ds, back)["coco_map"] == evaluate_detections(ds, dets)["coco_map"] == pytest.approx(1)


# --- drawing ---------------------------------------------------------------------------------------------------------

def test_draw_boxes_and_plots(tmp_path):
    from PIL import Image

    from googlenet.detect.draw import PALETTE, draw_boxes, plot_pr, plot_recall

    rgb = np.zeros((80, 100, 3), np.uint8)
    img = draw_boxes(rgb, np.array([[20, 30, 60, 70]], np.float32), [1], [0.87], ["cat", "dog"])
    px = np.asarray(img)
    assert img.size == (100, 80)
    assert tuple(px[50, 20]) == PALETTE[1] and tuple(px[50, 59]) == PALETTE[1]  # left and right edge pixels
    assert tuple(px[50, 40]) == (0, 0, 0) and tuple(px[50, 61]) == (0, 0, 0)  # inside and outside: untouched
    label = px[15:29, 21:50]  # the "dog 0.87" tag above the box: its colour with white text
    assert (label == PALETTE[1]).all(-1).any() and (label.min(-1) > 150).any()  # anti-aliased white text
    pr = plot_pr({"cat": ([0, .5, 1], [1, 1, .5])}, tmp_path / "pr.png", ap={"cat": 0.75})
    rc = plot_recall({"ss": ([10, 100, 1000], [.3, .7, .9])}, tmp_path / "sub" / "recall.png")
    assert Image.open(pr).size == (600, 500) and Image.open(rc).size == (600, 450)
