"""Faster R-CNN on the GoogLeNet trunk: feature maps per trunk, the trunk's own preprocessing inside the detector
(against the classifier's path on the same pixels), anchors that agree with the maps, a tiny train + eval +
predict, and each detector's file refused by the other."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from googlenet.cli import main
from googlenet.data.transforms import model_input
from googlenet.detect.faster.backbone import googlenet_backbone
from googlenet.detect.faster.recipe import load_recipe
from googlenet.detect.faster_rcnn import build_faster_rcnn
from googlenet.models import create_model
from googlenet.pretrained.bvlc import PREPROCESSING as BVLC


def _pixels(h=96, w=128, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (1, 3, h, w), dtype=np.uint8))


@pytest.mark.parametrize("arch", ["googlenet", "googlenet_bn", "googlenet_tv"])
def test_fpn_maps_have_the_names_strides_and_channels_of_the_trunk(arch):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=5, aux_logits=False).eval()
    backbone, head = googlenet_backbone(model, "fpn", trainable_layers=4, frozen_bn=False, fpn_channels=64)
    assert head is None and backbone.out_channels == 64
    with torch.no_grad():
        maps = backbone(_pixels(128, 192).float() / 255)
    assert list(maps) == ["0", "1", "2", "pool"]
    # strides 8, 16, 32 (inception3b, 4e, 5b) and FPN's max-pooled 64
    assert [tuple(m.shape) for m in maps.values()] == [(1, 64, 16, 24), (1, 64, 8, 12), (1, 64, 4, 6), (1, 64, 2, 3)]
    # The body's taps carry the trunk's own widths (480 / 832 / 1024).
    with torch.no_grad():
        taps = backbone.body(_pixels(128, 192).float() / 255)
    assert [t.shape[1] for t in taps.values()] == [480, 832, 1024]


def test_c4_trunk_is_stride_16_with_832_channels_and_inception5_as_the_box_head():
    model = create_model("googlenet", num_classes=5, aux_logits=False).eval()
    body, head = googlenet_backbone(model, "c4", trainable_layers=4, frozen_bn=False)
    with torch.no_grad():
        fmap = body(_pixels(96, 128).float() / 255)
        pooled = head(torch.randn(3, 832, 14, 14))
    assert body.out_channels == 832 and fmap.shape == (1, 832, 6, 8)
    assert pooled.shape == (3, 1024) and head.inception5b is model.inception5b


@pytest.mark.parametrize("pre,arch", [(BVLC, "googlenet"), (None, "googlenet_tv")])
def test_the_trunk_inside_the_detector_sees_what_the_classifier_sees(pre, arch):
    """RGB 0..1 through the detector's backbone (C4 body + head) gives the classifier's pooled features on the same
    pixels through its own preprocessing path: BVLC's BGR 0..255 minus the mean, or torchvision's remap."""
    torch.manual_seed(1)
    model = create_model(arch, num_classes=5, aux_logits=False).eval()
    if pre is not None:
        model.preprocessing = dict(pre)
    from googlenet.weights import default_preprocessing

    used = getattr(model, "preprocessing", None) or default_preprocessing()
    pixels = _pixels(112, 112, seed=2)
    with torch.no_grad():
        want = model.forward_features(model_input(pixels, used)).logits
        body, head = googlenet_backbone(model, "c4", trainable_layers=4, frozen_bn=False)
        got = head(body(pixels.float() / 255))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("trunk", ["c4", "fpn"])
def test_the_detector_runs_on_each_trunk_and_anchors_match_the_maps(trunk):
    recipe = load_recipe("cpu", {"trunk": trunk, "min_size": 128, "max_size": 160,
                                 "anchor_sizes": [16, 32, 64, 128], "representation_size": 64, "fpn_channels": 32})
    model = build_faster_rcnn(create_model("googlenet_bn", num_classes=1, aux_logits=False), recipe, 3,
                              pretrained=False)
    model.eval()
    # One anchor-size tuple per map (torchvision requires it): 4 for FPN, 1 for C4.
    assert len(model.rpn.anchor_generator.sizes) == (4 if trunk == "fpn" else 1)
    with torch.no_grad():
        out = model([torch.rand(3, 120, 150)])[0]
    assert set(out) == {"boxes", "labels", "scores"} and out["boxes"].shape[1] == 4
    assert ((out["labels"] >= 1) & (out["labels"] <= 3)).all()
    model.train()
    losses = model([torch.rand(3, 120, 150)], [{"boxes": torch.tensor([[10.0, 20, 60, 90]]),
                                                "labels": torch.tensor([2])}])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_bad_recipe_values_are_one_line():
    from googlenet.errors import UserError

    with pytest.raises(UserError, match="4 anchor sizes"):
        load_recipe("cpu", {"trunk": "fpn", "anchor_sizes": [32, 64, 128]})
    with pytest.raises(UserError, match="unknown Faster R-CNN recipe"):
        load_recipe("nope")
    with pytest.raises(UserError, match="roi_sampling_ratio must be 0..8, got 9"):
        load_recipe("cpu", {"roi_sampling_ratio": 9})


def test_the_c4_cpu_recipe_samples_its_rois_once_a_bin_and_keeps_fewer():
    recipe = load_recipe("cpu_c4")
    assert (recipe.trunk, recipe.roi_sampling_ratio, recipe.box_batch_size_per_image) == ("c4", 1, 64)
    model = build_faster_rcnn(create_model("googlenet_bn", num_classes=1, aux_logits=False), recipe, 3,
                              pretrained=False)
    assert model.roi_heads.box_roi_pool.sampling_ratio == 1
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 64
    assert load_recipe("cpu").roi_sampling_ratio == 2  # torchvision's default stays the FPN recipe's


@pytest.mark.slow
def test_train_eval_predict_and_each_file_refused_by_the_other(tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["detect", "train", "--detector", "faster-rcnn", "--out", str(run), "--scenes-train", "8",
               "--scenes-test", "4", "--iterations", "3", "--min-size", "128", "--max-size", "160", "--json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    res = json.loads(cap.out.strip().splitlines()[-1])
    assert res["detector"] == "faster-rcnn" and res["train_images"] == 8 and res["test_images"] == 4
    assert 0 <= res["voc07_map"] <= 1 and res["training"]["steps"] == 3
    voc = run / "scenes" / "VOC2007"
    rc = main(["detect", "eval", "--weights", res["weights"], "--data", str(voc), "--json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert json.loads(cap.out.strip().splitlines()[-1])["voc07_map"] == pytest.approx(res["voc07_map"], abs=1e-9)
    image = next((voc / "JPEGImages").glob("*.jpg"))
    rc = main(["detect", "predict", str(image), "--weights", res["weights"], "--json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    got = json.loads(cap.out.strip().splitlines()[-1])["images"][0]
    assert all(d["class"] in res["classes"] for d in got["detections"])
    # The Faster R-CNN file where R-CNN is required (an ensemble), and the reader of one kind given the other.
    from googlenet.detect.detector import RCNNDetector
    from googlenet.detect.faster_rcnn import FasterRCNNDetector
    from googlenet.errors import UserError

    with pytest.raises(UserError, match="holds a faster-rcnn detector, not rcnn") as e:
        RCNNDetector.from_file(res["weights"])
    assert "\n" not in str(e.value)
    rc = main(["detect", "eval", "--weights", res["weights"], "--weights", res["weights"], "--data", str(voc)])
    cap = capsys.readouterr()
    assert rc == 2 and len(cap.err.strip().splitlines()) == 1
    rcnn = tmp_path / "rcnn.safetensors"
    from googlenet.detect.fileformat import save_detector_file

    save_detector_file(rcnn, {"x": torch.zeros(1)}, {"detector": "rcnn", "classes": ["a"]})
    with pytest.raises(UserError, match="holds a rcnn detector, not faster-rcnn") as e:
        FasterRCNNDetector.from_file(rcnn)
    assert "\n" not in str(e.value)
