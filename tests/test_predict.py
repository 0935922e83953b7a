"""googlenet predict: a folder mixing good and bad files, class names from the weights (or ImageNet's), exit codes."""

import json

import pytest
import torch
from PIL import Image

import googlenet
from googlenet.cli import main
from googlenet.data.embedded import CLASS_NAMES
from googlenet.data.imagenet import imagenet_classes

PRE = {"input_size": 64, "resize_size": 73, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.25] * 3}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "m.safetensors"
    model = googlenet.create_model("googlenet_bn", num_classes=10, aux_logits=False)
    googlenet.save_model(model, path, class_names=CLASS_NAMES, preprocessing=PRE)
    return str(path)


def test_predict_folder_mixing_good_and_bad_files(weights, tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (90, 60), (250, 10, 10)).save(tmp_path / "b.png")
    Image.new("L", (50, 80), 128).save(tmp_path / "sub" / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    missing = tmp_path / "missing.png"
    assert main(["predict", str(tmp_path), str(missing), "--weights", weights, "--topk", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # every file under the folder, recursively, sorted; bad ones reported, not fatal
    assert [p["image"] for p in r["predictions"]] == [str(tmp_path / "b.png"), str(tmp_path / "sub" / "a.jpg")]
    assert sorted(e["image"] for e in r["errors"]) == sorted(str(tmp_path / n)
                                                             for n in ("empty.png", "missing.png", "notes.txt"))
    assert {e["error"] for e in r["errors"]} >= {"file not found", "empty file (0 bytes)"}
    for p in r["predictions"]:
        probs = [t["prob"] for t in p["topk"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(t["label"] == CLASS_NAMES[t["index"]] for t in p["topk"])


def test_predict_text_output_and_topk_clamped(weights, tmp_path, capsys):
    Image.new("RGB", (64, 64), (0, 120, 0)).save(tmp_path / "x.png")
    assert main(["predict", str(tmp_path / "x.png"), "--weights", weights, "--topk", "50", "--crops", "10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(tmp_path / "x.png") and len(lines) == 1 + 10  # 10 classes, not 50
    probs = [float(line.split("%")[0]) for line in lines[1:]]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(100, abs=0.1)


def test_nothing_readable_exits_2_with_one_line_and_json(weights, tmp_path, capsys):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff junk")
    assert main(["predict", str(tmp_path), "--weights", weights, "--json"]) == 2
    out, err = capsys.readouterr()
    r = json.loads(out.strip().splitlines()[-1])
    assert r["predictions"] == [] and [e["image"] for e in r["errors"]] == [str(tmp_path / "bad.jpg")]
    # one error line, after the progress bar's
    assert err.splitlines()[-1].startswith("googlenet predict: error: no readable image") and "Traceback" not in err
    assert err.count("googlenet predict: error") == 1


def test_missing_weights_exit_2(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "--weights", str(tmp_path / "w.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights file not found" in err


def test_imagenet_names_for_1000_class_weights_without_names():
    from googlenet.evaluate.ensemble import Ensemble
    from googlenet.evaluate.predict import class_names

    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[999] == "toilet tissue"
    model = googlenet.create_model("googlenet_bn", num_classes=1000, aux_logits=False)
    model.class_names, model.preprocessing = None, PRE
    assert class_names(Ensemble([model])) == names
