"""The project's weights file: safetensors + JSON metadata, loaded without pickle, checked on the way in."""

import json
import pickle

import pytest
import torch

import googlenet
from googlenet.weights import read_metadata


@pytest.mark.parametrize("arch", ["googlenet", "googlenet_bn", "googlenet_tv"])
def test_round_trip(tmp_path, arch):
    torch.manual_seed(0)
    model = googlenet.create_model(arch, num_classes=3, dropout=0.3).eval()
    path = googlenet.save_model(model, tmp_path / "w.safetensors", class_names=["a", "b", "c"],
                                preprocessing={"input_size": 96, "resize_size": 110, "interpolation": "bilinear",
                                               "mean": [0.5] * 3, "std": [0.25] * 3}, note="hello")
    loaded = googlenet.load_model(path)
    assert not loaded.training
    assert loaded.metadata["arch"] == arch and loaded.metadata["note"] == "hello"
    assert loaded.class_names == ["a", "b", "c"] and loaded.preprocessing["input_size"] == 96
    assert loaded.dropout.p == 0.3
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temp file


def test_load_refuses_pickle_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps({"state_dict": Evil()}))
    with pytest.raises(googlenet.UserError, match="not a valid googlenet weights file"):
        googlenet.load_model(bad)
    assert not marker.exists()


def test_load_refuses_truncated_and_mismatched(tmp_path):
    model = googlenet.create_model("googlenet", num_classes=4)
    path = googlenet.save_model(model, tmp_path / "w.safetensors")
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(googlenet.UserError):
        googlenet.load_model(tmp_path / "trunc.safetensors")
    with pytest.raises(googlenet.UserError, match="holds arch googlenet, not googlenet_bn"):
        googlenet.load_model(path, arch="googlenet_bn")
    with pytest.raises(googlenet.UserError, match="has 4 classes, not 10"):
        googlenet.load_model(path, num_classes=10)
    with pytest.raises(googlenet.UserError, match="not found"):
        googlenet.load_model(tmp_path / "missing.safetensors")


def test_metadata_that_lies_about_shapes_is_refused(tmp_path):
    from safetensors.torch import save_file

    model = googlenet.create_model("googlenet", num_classes=4)
    meta = dict(read_metadata(googlenet.save_model(model, tmp_path / "w.safetensors")))
    meta["num_classes"] = 7
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "lie.safetensors"),
              metadata={"googlenet": json.dumps(meta)})
    with pytest.raises(googlenet.UserError, match="shape"):
        googlenet.load_model(tmp_path / "lie.safetensors")


def test_integer_weights_and_deep_metadata_are_refused(tmp_path):
    from safetensors.torch import save_file

    model = googlenet.create_model("googlenet", num_classes=4)
    meta = dict(read_metadata(googlenet.save_model(model, tmp_path / "w.safetensors")))
    ints = {k: (v.to(torch.int32) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(ints, str(tmp_path / "ints.safetensors"), metadata={"googlenet": json.dumps(meta)})
    with pytest.raises(googlenet.UserError, match="is int32, expected float32"):
        googlenet.load_model(tmp_path / "ints.safetensors")
    floats = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(floats, str(tmp_path / "yes.safetensors"),
              metadata={"googlenet": json.dumps(dict(meta, options=dict(meta["options"], transform_input="yes")))})
    with pytest.raises(googlenet.UserError, match="transform_input must be true or false, got 'yes'"):
        googlenet.load_model(tmp_path / "yes.safetensors")
    save_file(floats, str(tmp_path / "deep.safetensors"), metadata={"googlenet": "[" * 100_000 + "]" * 100_000})
    with pytest.raises(googlenet.UserError, match="metadata is not valid JSON"):
        googlenet.load_model(tmp_path / "deep.safetensors")


def test_save_model_refuses_scripted_models_and_duplicate_names(tmp_path):
    import warnings

    model = googlenet.create_model("googlenet_bn", num_classes=3).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(model)
    with pytest.raises(ValueError, match="eager GoogLeNet"):
        googlenet.save_model(scripted, tmp_path / "s.safetensors", class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="unique"):
        googlenet.save_model(model, tmp_path / "d.safetensors", class_names=["a", "a", "b"])
    assert not list(tmp_path.iterdir())
