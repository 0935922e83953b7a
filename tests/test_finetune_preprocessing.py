"""Folder data fine-tuned from --init weights is preprocessed as those weights say (channel order, pixel range,
mean/std, grey, sizes): the batches the loader yields against an independent computation, flags and config keys
that override it, and the preprocessing the resulting weights file carries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

import googlenet
from googlenet.cli import main
from googlenet.train.config import resolve
from googlenet.train.data import build_data
from googlenet.weights import load_model

BGR = {"input_size": 64, "resize_size": 80, "interpolation": "bilinear", "mean": [104.0, 117.0, 123.0],
       "std": [1.0, 2.0, 4.0], "channel_order": "BGR", "pixel_range": 255, "grayscale": False}
GREY = {"input_size": 64, "resize_size": 72, "interpolation": "bilinear", "mean": [0.3, 0.3, 0.3],
        "std": [0.35, 0.35, 0.35], "channel_order": "RGB", "pixel_range": 1, "grayscale": True}
KEYS = ("input_size", "resize_size", "mean", "std", "channel_order", "pixel_range", "grayscale")


def _init_weights(tmp_path, pre):
    torch.manual_seed(0)
    path = tmp_path / "init.safetensors"
    googlenet.save_model(googlenet.create_model("googlenet", num_classes=2, aux_logits=True), path,
                         class_names=["x", "y"], preprocessing=pre)
    return str(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """DIR/<class>/*: square images (the reference's resize and centre crop then agree pixel for pixel)."""
    root = tmp_path_factory.mktemp("one-folder")
    g = np.random.default_rng(0)
    for cls in ("x", "y"):
        (root / cls).mkdir()
        for i in range(5):
            Image.fromarray(g.integers(0, 256, (100, 100, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def reference(path, pre):
    """The preprocessing written out independently: torchvision resize + centre crop of 0..1 pixels, grey, scale,
    channel order, mean/std."""
    x = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
    x = TF.resize(x, [pre["resize_size"]] * 2, antialias=True)
    x = TF.center_crop(x, [pre["input_size"]] * 2)
    if pre["grayscale"]:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    x = x * pre["pixel_range"]
    if pre["channel_order"] == "BGR":
        x = x[[2, 1, 0]]
    return (x - torch.tensor(pre["mean"]).view(3, 1, 1)) / torch.tensor(pre["std"]).view(3, 1, 1)


@pytest.mark.parametrize("pre", [BGR, GREY], ids=["bgr-255", "grey"])
def test_folder_batches_follow_the_init_weights_preprocessing(tmp_path, folder, pre):
    init = _init_weights(tmp_path, pre)
    cfg = resolve("finetune", None, {"init": init, "data": str(folder), "out": str(tmp_path / "run"),
                                     "augment": "none", "workers": 0})
    data = build_data(cfg, torch.device("cpu"))
    assert {k: data.preprocessing[k] for k in KEYS} == {k: pre[k] for k in KEYS}
    for source in (data.train, data.held_out):
        images, labels, skipped = next(iter(source.batches([torch.arange(len(source))])))
        assert images.shape == (len(source), 3, 64, 64) and not skipped
        ref = torch.stack([reference(s.path, pre) for s in source.dataset.samples])
        torch.testing.assert_close(images, ref, rtol=1e-6, atol=1e-6)


def test_paper_and_flip_augmentations_end_in_the_init_preprocessing(tmp_path, folder):
    """Random crops cannot be compared pixel for pixel: the grey weights' batches must be grey, in its scale."""
    init = _init_weights(tmp_path, GREY)
    for augment in ("paper", "flip"):
        cfg = resolve("finetune", None, {"init": init, "data": str(folder), "out": str(tmp_path / augment),
                                         "augment": augment, "workers": 0})
        images, _, _ = next(iter(build_data(cfg, torch.device("cpu")).train.batches([torch.arange(4)])))
        assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2])
        pixels = images * 0.35 + 0.3  # back to 0..1
        assert pixels.min() >= -0.2 and pixels.max() <= 1.2  # (PCA lighting may step a little outside 0..1)


def test_flags_and_config_keys_override_the_init_metadata(tmp_path):
    init = _init_weights(tmp_path, BGR)
    cfg = resolve("finetune", None, {"init": init, "mean": [1.0, 2.0, 3.0], "channel_order": "RGB"})
    assert cfg.mean == (1.0, 2.0, 3.0) and cfg.channel_order == "RGB" and cfg.pixel_range == 255
    assert cfg.input_size == 64 and cfg.resize_size == 80
    config = tmp_path / "c.yaml"
    config.write_text("input_size: 96\npixel_range: 1\n")
    cfg = resolve("finetune", str(config), {"init": init})
    # a hand-set input size keeps the usual resize (not the source's 80 for 64)
    assert cfg.input_size == 96 and cfg.resize_size is None and cfg.pixel_range == 1 and cfg.std == (1.0, 2.0, 4.0)
    cfg = resolve("finetune", None, {})
    assert (cfg.mean, cfg.channel_order, cfg.pixel_range) == (None, None, None)  # ImageNet's at data time


@pytest.mark.slow
def test_trained_weights_carry_the_init_preprocessing_and_source(tmp_path, folder, capsys):
    init = _init_weights(tmp_path, BGR)
    code = main(["train", "--init", init, "--data", str(folder), "--epochs", "1",
                 "--batch-size", "4", "--workers", "0", "--precision", "fp32", "--out", str(tmp_path / "run"),
                 "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    model = load_model(json.loads(out.strip().splitlines()[-1])["weights"])
    assert {k: model.preprocessing[k] for k in KEYS} == {k: BGR[k] for k in KEYS}
    init_meta = model.metadata["training"]["init"]
    assert init_meta["source"] == init and init_meta["arch"] == "googlenet" and init_meta["carried_classes"] == 2


def test_embedded_data_from_bgr_init_is_fed_as_the_init_was_trained(tmp_path):
    """The grey Fashion-MNIST images, upsampled as always, reach a BGR 0..255 trunk in its own scale and order."""
    import torch.nn.functional as F

    from googlenet.data import embedded

    cfg = resolve("finetune", None, {"init": _init_weights(tmp_path, BGR), "classes": "0-1", "per_class": 4,
                                     "out": str(tmp_path / "run")})
    data = build_data(cfg, torch.device("cpu"))
    for source in (data.held_out, data.train):
        plan = [torch.arange(len(source.labels))]
        x, labels, _ = next(source.batches(plan))
        grey = F.interpolate(source.images.unsqueeze(1).float() / 255, size=(64, 64), mode="bilinear",
                             align_corners=False).expand(-1, 3, -1, -1)
        expected = (grey * 255 - torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1)) \
            / torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1)
        if source is data.train:  # the finetune recipe mirrors: compare each image with itself or its mirror
            same = [(x[i] - expected[i]).abs().max() < 1e-3 or (x[i] - expected[i].flip(-1)).abs().max() < 1e-3
                    for i in range(len(x))]
            assert all(same)
        else:
            assert (x - expected).abs().max() < 1e-3, (x - expected).abs().max()
    assert data.preprocessing["channel_order"] == "BGR" and data.preprocessing["pixel_range"] == 255
    assert data.preprocessing["mean"] == [104.0, 117.0, 123.0] and data.preprocessing["grayscale"] is True
    assert len(embedded.select(*embedded.load_fashion(), "0-1", 4)[0].labels) == 8
