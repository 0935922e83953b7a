"""The evaluators against PR curves worked out by hand, a line-by-line transcription of the VOC devkit, and COCO
figures from an independent COCO evaluator (faster-coco-eval through torchmetrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from googlenet.detect.data import DetectionImage, DetectionSet
from googlenet.detect.metrics import evaluate_detections, voc07_ap, voc12_ap


def _image(i, boxes, labels, difficult=None, w=100, h=100):
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    return DetectionImage(f"im{i}", __import__("pathlib").Path(f"im{i}.jpg"), w, h, boxes,
                          np.array(labels, np.int64), np.array(difficult or [False] * len(labels), bool), i)


def _voc(box):  # a VOC pixel box (1-based, inclusive) as the project's 0-based continuous box
    x1, y1, x2, y2 = box
    return [x1 - 1, y1 - 1, x2, y2]


CAT, DOG, BIRD = 0, 1, 2
A, B, C, D = (1, 1, 50, 50), (51, 51, 100, 100), (21, 21, 60, 60), (10, 10, 40, 40)


def hand_worked():
    dset = DetectionSet(["cat", "dog", "bird"], [
        _image(1, [_voc(A), _voc(B), _voc(D)], [CAT, CAT, DOG], [False, True, False]),  # B is difficult
        _image(2, [_voc(C)], [CAT]),
        _image(3, [], []),  # an image with no boxes
        _image(4, [_voc((1, 1, 10, 10))], [BIRD]),  # bird: a class with no detections
    ], "voc", "hand")
    far = [70, 70, 90, 90]
    dets = {
        # score order: A .9 TP, A again .8 duplicate FP, B .7 difficult (ignored), C .6 TP, im3 .6 FP (a tie: im2
        # comes before im3 in the set, so the TP is taken first), far .5 FP.
        # dog: IoU 465/961 = 0.484 (VOC pixels 10..40 x 10..24) at .9 is a FP; 496/961 = 0.516 at .8 a TP.
        "im1": (np.array([_voc(A), _voc(A), _voc(B), _voc((10, 10, 40, 24)), _voc((10, 10, 40, 25))], np.float32),
                np.array([CAT, CAT, CAT, DOG, DOG]), np.array([.9, .8, .7, .9, .8])),
        "im2": (np.array([_voc(C), far], np.float32), np.array([CAT, CAT]), np.array([.6, .5])),
        "im3": (np.array([[5, 5, 30, 30]], np.float32), np.array([CAT]), np.array([.6])),
    }
    return dset, dets


def test_hand_worked_voc_aps():
    dset, dets = hand_worked()
    out = evaluate_detections(dset, dets, metrics=("voc07", "voc12", "ilsvrc"))
    # cat: 2 positives (B is difficult). tp = 1 1 1 2 2 2, fp = 0 1 1 1 2 3 over the six detections:
    # recall .5 .5 .5 1 1 1, precision 1 .5 .5 2/3 .5 .4.
    # VOC07: t = 0 ... .5 -> 1 (6 points), t = .6 ... 1 -> 2/3 (5 points): (6 + 10/3) / 11 = 28/33.
    # VOC12: envelope 1 up to recall .5, 2/3 up to recall 1: .5 * 1 + .5 * 2/3 = 5/6.
    assert out["ap"]["voc07"]["cat"] == pytest.approx(28 / 33, abs=1e-12)
    assert out["ap"]["voc12"]["cat"] == pytest.approx(5 / 6, abs=1e-12)
    # dog: FP then TP: recall 0 1, precision 0 .5 -> .5 under both rules. bird: no detections -> 0.
    for rule in ("voc07", "voc12", "ilsvrc"):
        assert out["ap"][rule]["dog"] == pytest.approx(0.5, abs=1e-12)
        assert out["ap"][rule]["bird"] == 0.0
    assert out["voc07_map"] == pytest.approx((28 / 33 + 0.5) / 3, abs=1e-12)
    assert out["voc12_map"] == pytest.approx((5 / 6 + 0.5) / 3, abs=1e-12)
    # ILSVRC: every box here is large (threshold 0.5) and no duplicate has a second box to go to: as VOC12.
    assert out["ap"]["ilsvrc"]["cat"] == pytest.approx(5 / 6, abs=1e-12)
    rec, prec = out["pr"]["voc07"]["cat"]
    np.testing.assert_allclose(rec, [.5, .5, .5, 1, 1, 1])
    np.testing.assert_allclose(prec, [1, .5, .5, 2 / 3, .5, .4])


def test_tie_order_follows_the_set():
    dset, dets = hand_worked()
    # Put im3 (FP at .6) before im2 (TP at .6) in the set: the FP now comes first, precision at recall 1 is 2/4.
    dset.images[1], dset.images[2] = dset.images[2], dset.images[1]
    out = evaluate_detections(dset, dets, metrics=("voc07",))
    assert out["ap"]["voc07"]["cat"] == pytest.approx((6 + 5 * 0.5) / 11, abs=1e-12)


def test_ilsvrc_small_objects_and_duplicates():
    # A 10x10 object: threshold min(.5, 100 / 400) = .25, so a detection of IoU .3 is found; VOC misses it.
    small = DetectionSet(["x"], [_image(1, [[0, 0, 10, 10]], [0])], "voc", "small")
    out = evaluate_detections(small, {"im1": (np.array([[0, 0, 10, 3]]), np.array([0]), np.array([1.0]))},
                              metrics=("voc12", "ilsvrc"))
    assert out["ap"]["ilsvrc"]["x"] == 1.0 and out["ap"]["voc12"]["x"] == 0.0
    # Two overlapping objects, the same box detected twice: VOC takes the best overlap (matched: a duplicate FP),
    # ILSVRC skips matched objects and finds the second (IoU 360/400 = .9).
    two = DetectionSet(["x"], [_image(1, [[0, 0, 20, 20], [0, 0, 20, 18]], [0, 0])], "voc", "two")
    box = np.array([[0, 0, 20, 20], [0, 0, 20, 20]])
    out = evaluate_detections(two, {"im1": (box, np.array([0, 0]), np.array([.9, .8]))}, metrics=("voc12", "ilsvrc"))
    assert out["ap"]["voc12"]["x"] == pytest.approx(0.5) and out["ap"]["ilsvrc"]["x"] == 1.0


def test_ap_formulas_on_a_written_out_curve():
    rec, prec = np.array([.2, .4, .4, .8]), np.array([1, 1, .5, .5])
    # 11-point: t=0..0.4 -> 1 (5 points), t=.5..0.8 -> .5 (4 points), t=.9, 1 -> 0: 7/11.
    assert voc07_ap(rec, prec) == pytest.approx(7 / 11)
    assert voc12_ap(rec, prec) == pytest.approx(.4 * 1 + .4 * .5)


# --- a transcription of VOCevaldet.m / VOCap.m, one detection at a time, for random sets ----------------------------

def devkit_ap(gt_boxes, gt_diff, det_img, det_boxes, det_conf, year):
    """gt_*: per image lists of VOC pixel boxes and flags; det_*: one class's detections, in file order."""
    npos = sum(int(not d) for diffs in gt_diff for d in diffs)
    gt_det = [[False] * len(b) for b in gt_boxes]
    si = sorted(range(len(det_conf)), key=lambda k: -det_conf[k])  # Python's sort is stable, as MATLAB's
    nd = len(si)
    tp, fp = [0] * nd, [0] * nd
    for d in range(nd):
        i = det_img[si[d]]
        bb = det_boxes[si[d]]
        ovmax, jmax = -math.inf, -1
        for j, bbgt in enumerate(gt_boxes[i]):
            bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
            iw, ih = bi[2] - bi[0] + 1, bi[3] - bi[1] + 1
            if iw > 0 and ih > 0:
                ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1)
                      - iw * ih)
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax, jmax = ov, j
        if ovmax >= 0.5:
            if gt_diff[i][jmax]:
                pass
            elif not gt_det[i][jmax]:
                tp[d], gt_det[i][jmax] = 1, True
            else:
                fp[d] = 1
        else:
            fp[d] = 1
    ctp, cfp, rec, prec = 0, 0, [], []
    for d in range(nd):
        ctp, cfp = ctp + tp[d], cfp + fp[d]
        rec.append(ctp / npos)
        prec.append(ctp / (ctp + cfp) if ctp + cfp else math.nan)
    if year == 2007:
        ap = 0.0
        # MATLAB's 0:0.1:1 (its colon operator: a + k d up to the middle, b - (n - k) d after it)
        for t in [0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]:
            p = [p for r, p in zip(rec, prec) if r >= t and not math.isnan(p)]
            ap += (max(p) if p else 0) / 11
        return ap
    mrec, mpre = [0] + rec + [1], [0] + prec + [0]
    for k in range(len(mpre) - 2, -1, -1):
        mpre[k] = max(x for x in (mpre[k], mpre[k + 1]) if not math.isnan(x)) if not (
            math.isnan(mpre[k]) and math.isnan(mpre[k + 1])) else math.nan
    return sum((mrec[k] - mrec[k - 1]) * mpre[k] for k in range(1, len(mrec)) if mrec[k] != mrec[k - 1])


def _random_set(rng, n_images=12, n_classes=3, decimals=1, whole=0.5):
    images, dets = [], {}
    for i in range(n_images):
        w, h = int(rng.integers(60, 120)), int(rng.integers(60, 120))
        n = int(rng.integers(0, 5))
        x1, y1 = rng.integers(1, w // 2, n), rng.integers(1, h // 2, n)
        x2, y2 = x1 + rng.integers(5, w // 2, n), y1 + rng.integers(5, h // 2, n)
        vboxes = np.stack([x1, y1, x2, y2], 1).reshape(-1, 4)
        labels = rng.integers(0, n_classes, n)
        images.append(_image(i, [_voc(b) for b in vboxes.tolist()], labels.tolist(), (rng.random(n) < .2).tolist(),
                             w, h))
        k = int(rng.integers(0, 8))
        # detections near the boxes (jittered by whole pixels or fractions), mostly of the box's class, some anywhere
        pick = rng.integers(0, n, k) if n else np.zeros(k, int)
        src = vboxes[pick].astype(np.float64) if n else rng.integers(1, 50, (k, 4)).astype(np.float64)
        if not n:
            src[:, 2:] += src[:, :2]
        jit = np.where(rng.random((k, 1)) < whole, rng.integers(-4, 5, (k, 4)), rng.normal(0, 3, (k, 4)))
        b = src + jit
        b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 1)
        lab = np.where(rng.random(k) < .8, labels[pick] if n else 0, rng.integers(0, n_classes, k))
        scores = np.round(rng.random(k), decimals)  # one decimal: many ties
        dets[f"im{i}"] = (np.array([_voc(x) for x in b.tolist()], np.float64).reshape(-1, 4), lab, scores)
    return DetectionSet([f"c{c}" for c in range(n_classes)], images, "voc", "random"), dets


@pytest.mark.parametrize("seed", range(6))
def test_voc_aps_equal_the_devkit_transcription_on_random_sets(seed):
    dset, dets = _random_set(np.random.default_rng(seed))
    out = evaluate_detections(dset, dets, metrics=("voc07", "voc12"))
    for c, name in enumerate(dset.classes):
        gt_boxes = [[[b[0] + 1, b[1] + 1, b[2], b[3]] for b, lab in zip(img.boxes.tolist(), img.labels) if lab == c]
                    for img in dset.images]
        gt_diff = [[bool(d) for d, lab in zip(img.difficult, img.labels) if lab == c] for img in dset.images]
        if not sum(int(not d) for diffs in gt_diff for d in diffs):
            assert math.isnan(out["ap"]["voc07"][name])
            continue
        det_img, det_boxes, det_conf = [], [], []  # in file order: the set's images, then within an image
        for i, img in enumerate(dset.images):
            b, lab, s = dets[img.image_id]
            for bb, ll, ss in zip(b.tolist(), lab.tolist(), s.tolist()):
                if ll == c:
                    det_img.append(i), det_boxes.append([bb[0] + 1, bb[1] + 1, bb[2], bb[3]]), det_conf.append(ss)
        for rule, year in (("voc07", 2007), ("voc12", 2012)):
            assert out["ap"][rule][name] == pytest.approx(
                devkit_ap(gt_boxes, gt_diff, det_img, det_boxes, det_conf, year), abs=1e-6), (rule, name)


# --- COCO against faster-coco-eval, directly and through torchmetrics ---------------------------------------------

def _faster_coco_eval(dset, dets):
    """AP@[.5:.95], AP50 by faster-coco-eval on COCO dicts written out here from the set (difficult -> iscrowd)."""
    import contextlib
    import io

    from faster_coco_eval import COCO, COCOeval_faster

    images, anns, res = [], [], []
    for n, img in enumerate(dset.images):
        images.append({"id": n + 1, "width": img.width, "height": img.height})
        for (x1, y1, x2, y2), lab, crowd in zip(img.boxes.tolist(), img.labels.tolist(), img.difficult.tolist()):
            anns.append({"id": len(anns) + 1, "image_id": n + 1, "category_id": lab + 10, "iscrowd": int(crowd),
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
        b, lab, s = dets[img.image_id]
        for (x1, y1, x2, y2), ll, ss in zip(b.tolist(), lab.tolist(), s.tolist()):
            res.append({"image_id": n + 1, "category_id": ll + 10, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": ss})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": k + 10, "name": c} for k, c in enumerate(dset.classes)]}
        gt.createIndex()
        ev = COCOeval_faster(gt, gt.loadRes(res), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return ev.stats[0], ev.stats[1]


@pytest.mark.parametrize("seed", range(3))
def test_coco_map_equals_faster_coco_eval(seed):
    # Scores without ties (COCO evaluators order tied detections each their own way) and fractional boxes (no IoU
    # exactly on a threshold, where float32 and float64 arithmetic can fall on either side).
    dset, dets = _random_set(np.random.default_rng(100 + seed), n_images=15, decimals=12, whole=0)
    assert sum(i.difficult.sum() for i in dset.images) > 0
    out = evaluate_detections(dset, dets, metrics=("coco",))
    ref_map, ref_map50 = _faster_coco_eval(dset, dets)
    assert out["coco_map"] == pytest.approx(ref_map, abs=1e-6)
    assert out["coco_map50"] == pytest.approx(ref_map50, abs=1e-6)
    assert 0.02 < out["coco_map"] < out["coco_map50"] < 0.9


def test_coco_map_equals_torchmetrics():
    import torch
    from torchmetrics.detection import MeanAveragePrecision

    dset, dets = _random_set(np.random.default_rng(7), n_images=15, decimals=12, whole=0)
    out = evaluate_detections(dset, dets, metrics=("coco",))
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="faster_coco_eval")
    preds, target = [], []
    for img in dset.images:
        b, lab, s = dets[img.image_id]
        preds.append({"boxes": torch.tensor(b, dtype=torch.float64).reshape(-1, 4),
                      "scores": torch.tensor(s, dtype=torch.float64), "labels": torch.tensor(lab)})
        target.append({"boxes": torch.tensor(img.boxes, dtype=torch.float64), "labels": torch.tensor(img.labels),
                       "iscrowd": torch.tensor(img.difficult.astype(np.int64))})
    metric.update(preds, target)
    ref = metric.compute()
    assert out["coco_map"] == pytest.approx(float(ref["map"]), abs=1e-6)
    assert out["coco_map50"] == pytest.approx(float(ref["map_50"]), abs=1e-6)


# --- googlenet detect eval on files ----------------------------------------------------------------------------------

def test_eval_cli_on_results_files_matches_pycocotools_reading_the_same_files(tmp_path, capsys):
    """The scene set's COCO JSON and a COCO results file, read by pycocotools itself (its own file reader and
    evaluator), against `detect eval` on the same files; and the VOC results files against the in-memory figures."""
    import contextlib
    import io
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from googlenet.cli import main
    from googlenet.detect.data import read_coco, read_voc
    from googlenet.detect.results import write_coco_results, write_voc_results
    from googlenet.detect.scenes import make_scenes

    voc = make_scenes(tmp_path / "scenes", seed=1, n_train=30, n_test=12, size=128)
    rng = np.random.default_rng(0)

    def noisy(dset):
        return {img.image_id: (img.boxes + rng.normal(0, 2.5, img.boxes.shape), img.labels.copy(),
                               rng.random(len(img.boxes))) for img in dset.images}

    vset = read_voc(voc, "test", classes=read_coco(tmp_path / "scenes/coco/instances_test.json",
                                                   voc / "JPEGImages").classes)
    vdets = noisy(vset)
    write_voc_results(tmp_path / "voc_res", vset, vdets, "test")
    assert main(["detect", "eval", "--detections", str(tmp_path / "voc_res"), "--data", str(voc), "--json",
                 "--plots", str(tmp_path / "plots")]) == 0
    got = json.loads(capsys.readouterr().out.splitlines()[-1])
    want = evaluate_detections(vset, vdets)
    for k in ("voc07_map", "voc12_map", "ilsvrc_map", "coco_map", "coco_map50"):
        assert got[k] == pytest.approx(want[k], abs=1e-4), k  # the files hold boxes to 0.01 px
    assert (tmp_path / "plots" / "pr.png").is_file() and set(got["ap"]["voc07"]) == set(vset.classes)

    gt_path = tmp_path / "scenes/coco/instances_test.json"
    cset = read_coco(gt_path, voc / "JPEGImages")
    write_coco_results(tmp_path / "res.json", cset, noisy(cset))
    assert main(["detect", "eval", "--detections", str(tmp_path / "res.json"), "--data", str(gt_path), "--images",
                 str(voc / "JPEGImages"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out.splitlines()[-1])
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(str(tmp_path / "res.json")), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert got["coco_map"] == pytest.approx(ev.stats[0], abs=1e-6)
    assert got["coco_map50"] == pytest.approx(ev.stats[1], abs=1e-6)
    assert "voc07_map" not in got and 0.1 < got["coco_map"] < 0.95
