"""The paper's R-CNN pieces against computations written out here: the context warp against numpy crops, window
labels and batches against hand-made overlaps, NMS against a greedy loop, the SVM against scipy's optimiser on the
same objective, MultiBox's matching against brute force and its loss against the formula."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from googlenet.detect.multibox import kmeans_priors, match, multibox_loss
from googlenet.detect.rcnn import label_windows, param_groups, sample_batch, select_detections
from googlenet.detect.recipe import DetectRecipe, load_recipe
from googlenet.detect.svm import BIAS_MULT, train_svm, train_svms
from googlenet.detect.warp import context_boxes, warp_regions


# --- warp ---------------------------------------------------------------------------------------------------------
def test_context_boxes_leave_the_asked_context_at_the_warped_size():
    box = np.array([[10, 20, 50, 100]], np.float32)  # 40 x 80
    out = context_boxes(box, size=64, context=8).numpy()[0]
    # the box fills the central 48 px of 64: each side grows by 8/48 of its length
    np.testing.assert_allclose(out, [10 - 40 * 8 / 48, 20 - 80 * 8 / 48, 50 + 40 * 8 / 48, 100 + 80 * 8 / 48],
                               rtol=1e-6)
    with pytest.raises(ValueError):
        context_boxes(box, size=16, context=8)


def test_warp_without_context_of_an_integer_box_at_its_own_size_is_the_crop():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.standard_normal((3, 40, 50)).astype(np.float32))
    out = warp_regions(img, np.array([[7, 5, 23, 21]], np.float32), size=16, context=0)
    np.testing.assert_allclose(out[0].numpy(), img[:, 5:21, 7:23].numpy(), atol=1e-6)


def test_warp_is_anisotropic_and_fills_outside_with_the_mean():
    img = torch.ones(3, 20, 20)  # normalised image: the mean is 0, every pixel here is 1
    # A 4 x 16 box warped to 8 x 8: a horizontal 2x stretch and a vertical 0.5x squeeze, all inside: all ones.
    inside = warp_regions(img, np.array([[2, 2, 6, 18]], np.float32), size=8, context=0)
    np.testing.assert_allclose(inside.numpy(), 1.0, atol=1e-6)
    # Far outside the image: all mean (0).
    outside = warp_regions(img, np.array([[40, 40, 60, 60]], np.float32), size=8, context=0)
    assert float(outside.abs().max()) == 0.0
    # The context of a box at the image's left edge reaches out of the image: the left columns are mean.
    edge = warp_regions(img, np.array([[0, 0, 20, 20]], np.float32), size=64, context=16)
    assert float(edge[0, :, 32, :12].abs().max()) == 0.0 and float(edge[0, :, 32, 20:44].min()) == 1.0


# --- windows, batches, parameter groups ---------------------------------------------------------------------------
def test_window_labels_follow_the_half_overlap_rule_and_include_the_ground_truth():
    gt = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    labels = np.array([3, 1])
    props = np.array([[0, 0, 10, 5],     # IoU 0.5 with box 0: positive of class 3 (+1)
                      [0, 0, 10, 4.9],   # IoU 0.49: background
                      [20, 20, 40, 35],  # IoU 0.75 with box 1: class 1 (+1)
                      [60, 60, 70, 70]], np.float32)
    windows, cls, best = label_windows(props, gt, labels, 0.5)
    assert windows.shape == (6, 4)
    np.testing.assert_array_equal(windows[:2], gt)
    np.testing.assert_array_equal(cls, [4, 2, 4, 0, 2, 0])
    np.testing.assert_allclose(best, [1, 1, 0.5, 0.49, 0.75, 0], atol=1e-6)


def test_a_batch_is_32_positives_and_96_background():
    r = DetectRecipe()
    rng = np.random.default_rng(0)
    positives, background = np.arange(0, 50), np.arange(50, 1000)
    idx = sample_batch(rng, positives, background, r)
    assert len(idx) == 128
    assert np.isin(idx[:32], positives).all() and np.isin(idx[32:], background).all()
    assert len(np.unique(idx[:32])) == 32  # enough positives: drawn without replacement
    few = sample_batch(rng, np.arange(5), background, r)  # too few positives: repeated, still 32
    assert len(few) == 128 and np.isin(few[:32], np.arange(5)).all()


def test_the_new_layer_learns_ten_times_faster():
    from googlenet.models import create_model

    model = create_model("googlenet", num_classes=7, aux_logits=True)
    groups = param_groups(model, DetectRecipe(lr=0.002, head_lr_mult=10))
    assert [g["name"] for g in groups] == ["trunk", "head"]
    assert groups[1]["lr"] == pytest.approx(0.02) and groups[0]["lr"] == pytest.approx(0.002)
    assert {id(p) for p in groups[1]["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    aux = {id(p) for p in model.aux1.parameters()}
    assert not aux & {id(p) for g in groups for p in g["params"]}
    n_all = sum(p.numel() for p in model.parameters())
    n_aux = sum(p.numel() for m in (model.aux1, model.aux2) for p in m.parameters())
    assert sum(p.numel() for g in groups for p in g["params"]) == n_all - n_aux


# --- NMS ----------------------------------------------------------------------------------------------------------
def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _greedy_nms(boxes, scores, t):
    order, keep = list(np.argsort(-scores, kind="stable")), []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if _iou(boxes[i], boxes[j]) <= t]
    return keep


def test_per_class_nms_matches_a_greedy_loop_and_caps_each_class():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 80, (60, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 40, (60, 2))], 1).astype(np.float32)
    scores = torch.from_numpy(rng.standard_normal((60, 3)).astype(np.float32))
    r = DetectRecipe(nms_iou=0.3, max_per_class=100)
    b, lab, s = select_detections(boxes, scores, r, threshold=-1.0)
    for c in range(3):
        sc = scores[:, c].numpy()
        ok = np.nonzero(sc > -1.0)[0]
        expected = ok[_greedy_nms(boxes[ok], sc[ok], 0.3)]
        np.testing.assert_allclose(np.sort(s[lab == c]), np.sort(sc[expected]), rtol=1e-6)
    assert np.all(np.diff(s) <= 0)  # sorted by score
    capped = select_detections(boxes, scores, DetectRecipe(nms_iou=1.0, max_per_class=5), threshold=-10)
    assert np.bincount(capped[1], minlength=3).tolist() == [5, 5, 5]


# --- SVMs ---------------------------------------------------------------------------------------------------------
def test_svm_reaches_the_optimum_scipy_finds_for_the_same_objective():
    from scipy.optimize import minimize

    rng = np.random.default_rng(2)
    pos = torch.from_numpy(rng.standard_normal((40, 5)) + 1.0).float()
    neg = torch.from_numpy(rng.standard_normal((120, 5)) - 0.5).float()
    c, wpos = 0.05, 2.0
    w, b = train_svm(pos, neg, c=c, pos_weight=wpos, iterations=500)
    x = np.concatenate([pos.numpy(), neg.numpy()]).astype(np.float64)
    x = np.concatenate([x, np.full((len(x), 1), BIAS_MULT)], 1)
    y = np.r_[np.ones(40), -np.ones(120)]
    cost = np.r_[np.full(40, c * wpos), np.full(120, c)]

    def f(v):  # liblinear's L2-loss L2-regularised primal, written out
        m = np.maximum(0, 1 - y * (x @ v))
        return 0.5 * v @ v + np.sum(cost * m * m), v - 2 * (x.T @ (cost * m * y))

    ref = minimize(f, np.zeros(6), jac=True, method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(w.numpy(), ref[:5], atol=1e-4)
    assert b == pytest.approx(ref[5] * BIAS_MULT, abs=1e-3)


def test_hard_negative_mining_lowers_the_objective_over_all_negatives():
    rng = np.random.default_rng(3)
    pos = [torch.from_numpy(rng.standard_normal((30, 8)) + 0.8).float()]
    neg = [torch.from_numpy(rng.standard_normal((3000, 8))).float()]
    svms = train_svms(pos, neg, rounds=6, first_negatives=50, c=1e-2)
    first = train_svms(pos, neg, rounds=1, first_negatives=50, c=1e-2)
    s_mined, s_first = svms.scores(neg[0])[:, 0], first.scores(neg[0])[:, 0]
    # Trained on 50 random negatives only, many of the other 2950 land inside the margin; mining fixes that.
    assert int((s_first > -1).sum()) > int((s_mined > -1).sum())

    def objective(m):  # the primal over every negative (what mining approximates), in the scaled feature space
        x = torch.cat([pos[0], neg[0]]) * m.feature_scale
        y = torch.cat([torch.ones(30), -torch.ones(3000)])
        cost = torch.cat([torch.full((30,), 2e-2), torch.full((3000,), 1e-2)])
        w = torch.cat([m.weight[0], m.bias[:1] / BIAS_MULT])
        margin = (1 - y * (x @ m.weight[0] + m.bias[0])).clamp_min(0)
        return float(0.5 * w @ w + (cost * margin ** 2).sum())

    assert objective(svms) < objective(first)


# --- MultiBox -----------------------------------------------------------------------------------------------------
def test_multibox_matching_is_the_cheapest_assignment():
    rng = np.random.default_rng(4)
    for _ in range(5):
        pred = torch.from_numpy(rng.uniform(0, 1, (5, 4))).float()
        logit = torch.from_numpy(rng.standard_normal(5)).float()
        gt = torch.from_numpy(rng.uniform(0, 1, (3, 4))).float()
        rows, cols = match(pred, logit, gt, alpha=0.3)

        def cost(assign):  # F for this assignment, written out
            c = 1 / (1 + np.exp(-logit.numpy().astype(np.float64)))
            matched = set(assign)
            loc = sum(0.15 * np.sum((pred[i].numpy() - gt[j].numpy()) ** 2) for j, i in enumerate(assign))
            return loc - sum(np.log(c[i]) for i in matched) - sum(np.log(1 - c[i]) for i in range(5) if i not in matched)

        best = min(itertools.permutations(range(5), 3), key=cost)
        got = [int(rows[list(cols).index(j)]) for j in range(3)]
        assert cost(got) == pytest.approx(cost(best), rel=1e-9)
        assert float(multibox_loss(pred, logit, gt, alpha=0.3)) == pytest.approx(cost(best), rel=1e-5)


def test_kmeans_priors_are_centres_of_the_training_boxes():
    a = np.tile([0.1, 0.1, 0.3, 0.3], (50, 1)) + np.random.default_rng(5).normal(0, 0.005, (50, 4))
    b = np.tile([0.5, 0.4, 0.9, 0.95], (50, 1)) + np.random.default_rng(6).normal(0, 0.005, (50, 4))
    priors = kmeans_priors(np.concatenate([a, b]), 2)
    assert priors.shape == (2, 4)
    got = priors[np.argsort(priors[:, 0])]
    np.testing.assert_allclose(got, [a.mean(0), b.mean(0)], atol=2e-3)


def test_recipes_load_and_bad_values_are_one_line():
    from googlenet.errors import UserError

    assert load_recipe("cpu").warp == 64
    paper = load_recipe("paper")
    assert (paper.warp, paper.context, paper.batch_positives, paper.batch_background, paper.nms_iou,
            paper.max_per_class, paper.head_lr_mult) == (224, 16, 32, 96, 0.3, 100, 10.0)
    with pytest.raises(UserError, match="warp must be"):
        load_recipe("cpu", {"warp": 10})
    with pytest.raises(UserError, match="unknown detection recipe"):
        load_recipe("nope")
