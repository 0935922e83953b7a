"""The public entry: ``googlenet.create_model(name, weights=...)`` and ``torch.hub.load(REPO, name, source="local")``.
The named sources (bvlc, inception5h, torchvision) are checked with their fixtures in test_bvlc.py,
test_inception5h.py and test_convert.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import googlenet
from googlenet.cli import main

REPO = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    torch.manual_seed(0)
    model = googlenet.create_model("googlenet_bn", num_classes=4)
    path = tmp_path_factory.mktemp("api") / "four.safetensors"
    pre = {**model.preprocessing, "input_size": 96, "resize_size": 110}
    googlenet.save_model(model, path, class_names=["a", "b", "c", "d"], preprocessing=pre)
    return path, model.eval()


def test_fresh_model_has_imagenet_preprocessing_and_trains(weights_file):
    model = googlenet.create_model("googlenet", num_classes=7, aux_logits=False)
    assert model.training and model.num_classes == 7 and model.aux1 is None and model.class_names is None
    assert model.preprocessing["input_size"] == 224 and model.metadata["arch"] == "googlenet"


def test_from_a_path_gives_the_saved_model_in_eval_mode(weights_file):
    path, reference = weights_file
    model = googlenet.create_model("googlenet_bn", weights=path)
    assert not model.training and model.class_names == ["a", "b", "c", "d"]
    assert model.preprocessing["input_size"] == 96
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_another_class_count_keeps_the_trunk_and_makes_a_fresh_head(weights_file):
    path, reference = weights_file
    model = googlenet.create_model("googlenet_bn", weights=path, num_classes=3)
    assert model.num_classes == 3 and model.class_names is None and model.fc.weight.shape == (3, 1024)
    trained = reference.state_dict()
    for key, value in model.state_dict().items():
        if key.startswith(("fc.", "aux1.fc2.", "aux2.fc2.")):
            assert value.shape[0] == 3
        else:
            assert torch.equal(value, trained[key]), key


def test_options_rebuild_around_the_same_layers(weights_file):
    path, reference = weights_file
    model = googlenet.create_model("googlenet_bn", weights=path, aux_logits=False)
    assert model.aux1 is None and not model.training
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-6)


def test_wrong_arch_and_unknown_names_are_one_line(weights_file):
    path, _ = weights_file
    with pytest.raises(googlenet.UserError, match=r"hold arch googlenet_bn, not googlenet$"):
        googlenet.create_model("googlenet", weights=path)
    with pytest.raises(ValueError, match="unknown arch"):  # as models.create_model has always said
        googlenet.create_model("resnet50")
    with pytest.raises(googlenet.UserError, match="does not exist|no such file|not found"):
        googlenet.create_model("googlenet", weights=path.parent / "missing.safetensors")


def test_torch_hub_load_from_a_clone(weights_file):
    path, reference = weights_file
    model = torch.hub.load(str(REPO), "googlenet_bn", source="local", weights=str(path), trust_repo=True)
    assert not model.training and model.class_names == ["a", "b", "c", "d"]
    fresh = torch.hub.load(str(REPO), "googlenet", source="local", num_classes=5, trust_repo=True)
    assert fresh.num_classes == 5 and fresh.metadata["arch"] == "googlenet"
