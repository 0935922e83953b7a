"""The detection commands end to end on a tiny offline scene set: train (--json), eval --weights and --detections,
predict --draw, propose; the proposal cache; a classifier weights file refused as a detector."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from googlenet.cli import main
from googlenet.detect import proposals
from googlenet.detect.data import read_voc

pytestmark = pytest.mark.slow


def _run(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run shared by the tests below: 16 + 6 scenes, 4 fine-tuning steps, 60 proposals."""
    run = tmp_path_factory.mktemp("run")
    rc = main(["detect", "train", "--out", str(run), "--scenes-train", "16", "--scenes-test", "6",
               "--iterations", "4", "--seed", "1", "--json"])
    assert rc == 0
    return run


def test_train_writes_the_detector_metrics_and_pictures(trained, capsys):
    res = json.loads((trained / "metrics.json").read_text())
    for key in ("weights", "voc07_map", "voc12_map", "ilsvrc_map", "coco_map", "coco_map50", "ap",
                "softmax_voc07_map", "seconds_per_image"):
        assert key in res, key
    assert res["train_images"] == 16 and res["test_images"] == 6
    classes = res["classes"]
    assert classes == sorted(classes) and set(res["ap"]["voc07"]) == set(classes)
    assert 0 <= res["voc07_map"] <= 1 and 0 <= res["coco_map"] <= res["coco_map50"] <= 1
    assert set(res["seconds_per_image"]) >= {"proposals", "features", "scoring"}
    assert (trained / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((trained / "drawn").glob("*.jpg"))) == 6
    # The VOC results files: one per class, rows "image score x1 y1 x2 y2" over test images only.
    test_ids = {i.image_id for i in read_voc(trained / "scenes" / "VOC2007", "test").images}
    files = sorted(trained.glob("**/comp4_det_test_*.txt"))
    assert {f.stem.split("_", 3)[3] for f in files} == set(classes)
    for f in files:
        for row in f.read_text().splitlines():
            parts = row.split()
            assert len(parts) == 6 and parts[0] in test_ids


def test_the_same_seed_and_thread_count_give_the_same_detector(trained, tmp_path, monkeypatch):
    """A second run of the fixture's training, with a proposal cache of its own (selective search runs again):
    every tensor of the detector file is equal, and so is the held-out mAP."""
    from safetensors.torch import load_file

    monkeypatch.setenv("GOOGLENET_PROPOSAL_CACHE", str(tmp_path / "fresh-cache"))
    again = tmp_path / "again"
    assert main(["detect", "train", "--out", str(again), "--scenes-train", "16", "--scenes-test", "6",
                 "--iterations", "4", "--seed", "1", "--json"]) == 0
    a, b = (load_file(str(r / "detector.safetensors")) for r in (trained, again))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    first, second = (json.loads((r / "metrics.json").read_text()) for r in (trained, again))
    assert first["voc07_map"] == second["voc07_map"]
    assert first["training"]["threads"] == second["training"]["threads"] == torch.get_num_threads()


def test_eval_of_the_saved_detector_and_of_its_results_files_agree(trained, capsys):
    res = json.loads((trained / "metrics.json").read_text())
    voc = trained / "scenes" / "VOC2007"
    rc, out, err = _run(["detect", "eval", "--weights", res["weights"], "--data", str(voc), "--json"], capsys)
    assert rc == 0, err
    again = _last_json(out)
    assert again["voc07_map"] == pytest.approx(res["voc07_map"], abs=1e-9)
    results = next(trained.glob("**/comp4_det_test_*.txt")).parent
    rc, out, err = _run(["detect", "eval", "--detections", str(results), "--data", str(voc), "--json"], capsys)
    assert rc == 0, err
    # The results files carry scores to 6 decimals: the same ranking, so the same AP.
    assert _last_json(out)["voc07_map"] == pytest.approx(res["voc07_map"], abs=1e-6)


def test_predict_draws_boxes_and_reports_them_per_image(trained, tmp_path, capsys):
    res = json.loads((trained / "metrics.json").read_text())
    image = next((trained / "scenes" / "VOC2007" / "JPEGImages").glob("*.jpg"))
    rc, out, err = _run(["detect", "predict", str(image), "--weights", res["weights"], "--draw", str(tmp_path / "d"),
                         "--top", "3", "--min-score=-1e9", "--json"], capsys)
    assert rc == 0, err
    got = _last_json(out)
    dets = got["images"][0]["detections"]
    assert len(dets) == 3
    for d in dets:
        assert d["class"] in res["classes"] and len(d["box"]) == 4 and isinstance(d["score"], float)
    drawn = list((tmp_path / "d").iterdir())
    assert len(drawn) == 1 and Image.open(drawn[0]).size == Image.open(image).size


def test_propose_reports_recall_for_each_method(trained, tmp_path, capsys):
    voc = trained / "scenes" / "VOC2007"
    rc, out, err = _run(["detect", "propose", "--data", str(voc), "--split", "test", "--method", "ss",
                         "--method", "ss-fast2x", "--plot", str(tmp_path / "recall.png"), "--json"], capsys)
    assert rc == 0, err
    got = _last_json(out)
    for m in ("ss", "ss-fast2x"):
        r = got["methods"][m]
        assert 0 < r["recall70"] <= r["recall50"] <= 1 and r["proposals_per_image"] > 0
    # The doubled superpixels give fewer proposals (the paper: about half).
    assert got["methods"]["ss-fast2x"]["proposals_per_image"] < got["methods"]["ss"]["proposals_per_image"]
    assert (tmp_path / "recall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_public_detector_reads_a_path_a_pil_image_and_an_array_alike(trained):
    """googlenet.detect.Detector.load(W)(image) -> boxes, labels, scores, the issue's Python interface."""
    import googlenet.detect as detect

    det = detect.Detector.load(json.loads((trained / "metrics.json").read_text())["weights"])
    path = sorted((trained / "scenes" / "VOC2007" / "JPEGImages").glob("*.jpg"))[-1]
    outs = [det(path), det(Image.open(path)), det(np.asarray(Image.open(path).convert("RGB")))]
    for boxes, labels, scores in outs:
        assert boxes.shape == (len(labels), 4) and scores.shape == labels.shape and boxes.dtype == np.float32
        assert np.all(np.diff(scores) <= 0) and (len(labels) == 0 or labels.max() < len(det.classes))
    assert all(np.array_equal(outs[0][i], o[i]) for o in outs[1:] for i in range(3))
    assert {"Detector", "read_voc", "evaluate_detections", "read_detections"} <= set(detect.__all__)
    with pytest.raises(AttributeError):
        detect.not_a_name


def test_a_detector_trained_with_multibox_proposes_with_it(trained, tmp_path, capsys):
    """--proposals ss-fast2x+multibox trains a MultiBox (grid head, k-means priors) into the detector file; propose
    then reports MultiBox alone (at most K boxes an image) and the union, whose recall is at least its selective
    search part's (the union holds every one of those boxes)."""
    from googlenet.detect.detector import RCNNDetector

    voc = trained / "scenes" / "VOC2007"
    recipe = tmp_path / "mb.yaml"
    recipe.write_text("arch: googlenet_bn\nwarp: 64\nproposals: ss-fast2x+multibox\ntrain_proposals: 60\n"
                      "test_proposals: 60\niterations: 2\nmultibox_k: 8\nmultibox_iterations: 2\n"
                      "multibox_input: 64\nmultibox_grid: 2\n")
    run = tmp_path / "run"
    rc, out, err = _run(["detect", "train", "--data", str(voc), "--recipe", str(recipe), "--out", str(run),
                         "--json"], capsys)
    assert rc == 0, err
    weights = _last_json(out)["weights"]
    mb = RCNNDetector.from_file(weights).multibox
    assert mb.config() == {"arch": "googlenet_bn", "input_size": 64, "k": 8, "grid": 2}
    assert tuple(mb.head.weight.shape) == (5 * 8, 1024 * 2 * 2)
    rc, out, err = _run(["detect", "propose", "--data", str(voc), "--split", "test", "--method", "multibox",
                         "--method", "ss-fast2x", "--method", "ss-fast2x+multibox", "--weights", weights, "--json"],
                        capsys)
    assert rc == 0, err
    got = _last_json(out)["methods"]
    assert 0 < got["multibox"]["proposals_per_image"] <= 8
    assert got["ss-fast2x+multibox"]["recall50"] >= got["ss-fast2x"]["recall50"]
    assert got["ss-fast2x+multibox"]["proposals_per_image"] <= got["ss-fast2x"]["proposals_per_image"] + 8


def test_a_classifier_weights_file_is_refused_as_a_detector(trained, tmp_path, capsys):
    from googlenet.models import create_model
    from googlenet.weights import save_model

    path = tmp_path / "classifier.safetensors"
    save_model(create_model("googlenet", num_classes=3, aux_logits=False), path)
    rc, out, err = _run(["detect", "eval", "--weights", str(path), "--data", str(trained / "scenes" / "VOC2007")],
                        capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "is a classifier weights file, not a detector" in err, err


def test_selective_search_is_read_back_from_the_cache(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    rgb = np.kron(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), np.ones((16, 16, 1), np.uint8))
    calls = []
    real = proposals.selective_search
    monkeypatch.setattr(proposals, "selective_search", lambda *a, **k: calls.append(1) or real(*a, **k))
    first, hit1 = proposals.cached_selective_search(rgb, "ss", 50, tmp_path)
    second, hit2 = proposals.cached_selective_search(rgb, "ss", 50, tmp_path)
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    np.testing.assert_array_equal(first, second)
    # Another setting or another image is another key.
    _, hit3 = proposals.cached_selective_search(rgb, "ss-fast2x", 50, tmp_path)
    _, hit4 = proposals.cached_selective_search(rgb[::-1].copy(), "ss", 50, tmp_path)
    assert not hit3 and not hit4 and len(calls) == 3


def test_selective_search_ranks_an_image_the_same_whatever_was_searched_before():
    """OpenCV ranks boxes with C's rand(): unseeded, a second search of the same image in the same process ranks
    the same boxes in another order, and max_proposals keeps another subset."""
    rng = np.random.default_rng(1)
    a = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    b = np.kron(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), np.ones((16, 16, 1), np.uint8))
    first = proposals.selective_search(a, "ss")
    proposals.selective_search(b, "ss")
    again = proposals.selective_search(a, "ss")
    assert len(first) > 5
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(proposals.selective_search(a, "ss", max_proposals=5), first[:5])


def test_bench_detect_puts_a_detector_and_an_ensemble_side_by_side(trained, capsys):
    """The single detector's mAP is detect eval's; an ensemble of two copies of it scores the same boxes (the mean
    of equal scores), takes about twice the time, and sums its members' recorded training time."""
    weights, voc = str(trained / "detector.safetensors"), str(trained / "scenes" / "VOC2007")
    rc, out, err = _run(["detect", "eval", "--weights", weights, "--data", voc, "--json"], capsys)
    assert rc == 0, err
    single_map = _last_json(out)["voc07_map"]
    rc, out, err = _run(["bench", "detect", "--detectors", weights, f"{weights},{weights}", "--data", voc, "--json"],
                        capsys)
    assert rc == 0, err
    one, two = _last_json(out)["results"]
    assert one["voc07_map"] == pytest.approx(single_map, abs=1e-9) and one["models"] == 1
    assert two["models"] == 2 and two["voc07_map"] == pytest.approx(single_map, abs=1e-6)
    assert one["train_wall_s"] > 0 and two["train_wall_s"] == pytest.approx(2 * one["train_wall_s"], abs=0.2)
    assert 0 <= one["coco_map"] <= 1 and one["seconds_per_image"] > 0 and one["peak_mib"] is not None
    rc, out, err = _run(["bench", "detect", "--detectors", weights], capsys)
    assert rc == 2 and "bench detect needs --detectors FILE" in err and err.count("\n") == 1
