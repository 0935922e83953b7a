"""googlenet eval: JSON on the embedded held-out part, ensemble averaging against a manual computation, torchrun
sharding with an odd image count, and the one-line errors."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torchvision.transforms import v2 as T

import googlenet
from googlenet.cli import main
from googlenet.data.embedded import CLASS_NAMES, MEAN, STD, load_fashion
from googlenet.evaluate.ensemble import ArrayImages, Ensemble
from googlenet.evaluate.evaluate import evaluate, spread

PRE = {"input_size": 64, "resize_size": 73, "interpolation": "bilinear", "mean": [MEAN] * 3, "std": [STD] * 3}


def save(path, seed, **kw):
    torch.manual_seed(seed)
    model = googlenet.create_model("googlenet_bn", num_classes=kw.pop("num_classes", 10), aux_logits=False)
    # random BN statistics, so that the random models disagree clearly with each other
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
    googlenet.save_model(model, path, preprocessing=kw.pop("preprocessing", PRE), **kw)
    return str(path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("w")
    return [save(d / f"{name}.safetensors", seed, class_names=CLASS_NAMES) for name, seed in (("a", 1), ("b", 2))]


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def test_eval_json_on_embedded_held_out(weights, capsys):
    assert main(["eval", "--weights", weights[0], "--max-images", "7", "--json"]) == 0
    r = last_json(capsys.readouterr().out)
    assert {"top1", "top5", "correct1", "correct5", "images", "crops", "models", "skipped_files", "top1_err",
            "top5_err"} <= set(r)
    assert (r["images"], r["crops"], r["models"], r["skipped_files"]) == (7, 1, 1, [])
    assert 0 <= r["correct1"] <= r["correct5"] <= 7
    assert r["top1"] == pytest.approx(r["correct1"] / 7) and r["top5_err"] == pytest.approx(1 - r["correct5"] / 7)


def manual_probs(path, images):
    """Softmax averaged over TenCrop's crops, computed with plain torchvision and the eager model."""
    model = googlenet.load_model(path)
    tf = T.Compose([T.Resize(73, antialias=True), T.TenCrop(64)])
    out = []
    with torch.no_grad():
        for img in images:
            crops = torch.stack(tf(img.expand(3, -1, -1))).float() / 255
            x = T.functional.normalize(crops, [MEAN] * 3, [STD] * 3)
            out.append(torch.softmax(model(x), dim=1).mean(dim=0))
    return torch.stack(out)


@pytest.mark.slow
def test_ensemble_averages_softmax_over_crops_then_models(weights):
    _, held = load_fashion()
    idx = spread(len(held), 2)
    models = [googlenet.load_model(w) for w in weights]
    result = evaluate(Ensemble(models), ArrayImages(held.images, held.labels), ["10"], indices=idx,
                      keep_probs=True, progress=False)
    manual = (manual_probs(weights[0], held.images[idx]) + manual_probs(weights[1], held.images[idx])) / 2
    assert result.indices == idx
    torch.testing.assert_close(result.probs, manual, atol=1e-5, rtol=1e-4)
    labels = held.labels[idx]
    assert result.counts[(2, "10")][0] == int((manual.argmax(1) == labels).sum())
    assert result.counts[(2, "10")][1] == int((manual.topk(5).indices == labels[:, None]).any(1).sum())


@pytest.mark.slow
def test_report_grid_json(weights, capsys, tmp_path):
    assert main(["eval", "--weights", *weights, "--max-images", "1", "--report", "--json", "--batch-size", "160",
                 "--report-dir", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "confusion.png").is_file()
    out = capsys.readouterr().out
    r = last_json(out)
    grid = [(row["models"], row["crops"], row["forward_passes"]) for row in r["report"]]
    assert grid == [(1, 1, 1), (1, 10, 10), (1, 144, 144), (2, 1, 2), (2, 10, 20), (2, 144, 288)]
    assert "models crops   cost top-5 err" in out
    assert (r["models"], r["crops"], r["images"]) == (2, 1, 1)


def test_eval_image_folder_with_bad_files_and_class_mapping(weights, tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "data" / "val"
    for name, colour in [("Bag", (10, 10, 10)), ("Trouser", (200, 200, 200))]:
        (root / name).mkdir(parents=True)
        Image.new("RGB", (40, 30), colour).save(root / name / "x.png")
    (root / "Bag" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    assert main(["eval", "--weights", weights[0], "--data", str(tmp_path / "data"), "--json", "--workers", "0"]) == 0
    r = last_json(capsys.readouterr().out)
    assert r["images"] == 2 and len(r["skipped_files"]) == 1
    assert r["skipped_files"][0]["file"].endswith("broken.jpg")
    # only unreadable files: the JSON still comes, then one error line and exit 2
    only_bad = tmp_path / "bad" / "Bag"
    only_bad.mkdir(parents=True)
    (only_bad / "x.png").write_bytes(b"")
    assert main(["eval", "--weights", weights[0], "--data", str(tmp_path / "bad"), "--json", "--workers", "0"]) == 2
    out, err = capsys.readouterr()
    assert last_json(out)["images"] == 0 and err.splitlines()[-1].startswith("googlenet eval: error: no readable")
    (root / "Robot").mkdir()  # a class the model does not know
    assert main(["eval", "--weights", weights[0], "--data", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not classes of the model" in err


def test_bad_inputs_exit_2_with_one_line(weights, tmp_path, capsys):
    def fails(argv, text):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse errors
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and text in err, err

    fails(["eval", "--weights", str(tmp_path / "missing.safetensors")], "weights file not found")
    fails(["eval", "--weights", weights[0], "--crops", "12"], "invalid choice: '12'")
    fails(["eval", "--weights", weights[0], "--precision", "fp64"], "--precision must be one of")
    other = save(tmp_path / "c.safetensors", 3, num_classes=7)
    fails(["eval", "--weights", weights[0], other], "models of an ensemble must share their classes")
    fails(["eval", "--weights", other], "pass --data DIR")
    fails(["eval", "--weights", weights[0], "--data", str(tmp_path / "nowhere")], "data folder not found")


@pytest.mark.slow
def test_torchrun_counts_equal_one_process(weights, capsys):
    """Two gloo ranks over 7 images (odd: rank 0 takes 4, rank 1 takes 3) give one process's counts exactly."""
    args = ["eval", "--weights", weights[0], "--max-images", "7", "--json", "--batch-size", "1"]
    assert main(args) == 0
    one = last_json(capsys.readouterr().out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "googlenet", *args], capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr
    b = last_json(two.stdout)
    assert one["world_size"] == 1 and b["world_size"] == 2
    keys = ["images", "correct1", "correct5", "top1", "top5", "crops", "models", "skipped_files"]
    assert {k: one[k] for k in keys} == {k: b[k] for k in keys}
    assert one["images"] == 7
    assert two.stdout.count('"top1"') == 1  # only rank 0 prints
