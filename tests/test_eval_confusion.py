"""eval --report: per-class accuracy and confusion matrix (CSV, PNG) equal to counts computed independently from
the model's own predictions."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from googlenet.cli import main
from googlenet.data import embedded
from googlenet.evaluate.confusion import per_class_rows
from googlenet.models import create_model
from googlenet.weights import load_model, save_model


def test_per_class_rows_from_a_known_matrix():
    m = torch.tensor([[3, 1, 0], [0, 0, 0], [2, 0, 5]])
    rows = per_class_rows(m, ["a", "b", "c"])
    assert [r["accuracy"] for r in rows] == [0.75, None, 5 / 7]
    assert [r["most_confused_with"] for r in rows] == ["b", "", "a"]


@pytest.mark.slow  # --report runs the 1, 10 and 144-crop schemes
def test_eval_report_confusion_matches_direct_predictions(tmp_path, capsys):
    # The 10 images eval --max-images 10 takes (spread evenly over the held-out 2,000), made into the 1-crop input
    # here: 28x28 resized to 64x64 (bilinear, antialiased; the centre 64x64 crop is all of it), then mean/std.
    _, held = embedded.load_fashion()
    idx = [i * len(held) // 10 for i in range(10)]
    grey = held.images[idx].unsqueeze(1).expand(-1, 3, -1, -1)
    x = TF.resize(grey, [64, 64], interpolation=InterpolationMode.BILINEAR, antialias=True).float()
    x = (x / 255 - embedded.MEAN) / embedded.STD
    truth = held.labels[idx]
    # A random net predicts one class for everything; centring its logits over these images (fc bias) and scaling
    # them up makes it predict several, with margins far above float noise.
    torch.manual_seed(0)
    model = create_model("googlenet_bn", num_classes=10, aux_logits=False).eval()
    with torch.no_grad():
        model.fc.bias -= model(x).mean(0)
        model.fc.weight *= 1000
        model.fc.bias *= 1000
        logits = model(x)
    pred = logits.argmax(1)
    top2 = logits.topk(2, dim=1).values
    assert float((top2[:, 0] - top2[:, 1]).min()) > 0.05
    expected = torch.zeros(10, 10, dtype=torch.long)
    for t, p in zip(truth.tolist(), pred.tolist()):
        expected[t, p] += 1  # rows: true class, columns: predicted
    # A matrix that tells rows from columns, and is right and wrong in places.
    assert len(set(pred.tolist())) >= 4 and not torch.equal(expected, expected.T)
    assert 0 < int(expected.trace()) < 10

    path = tmp_path / "w.safetensors"
    pre = {"input_size": 64, "resize_size": 64, "interpolation": "bilinear", "mean": [embedded.MEAN] * 3,
           "std": [embedded.STD] * 3}
    save_model(model, path, class_names=embedded.CLASS_NAMES, preprocessing=pre)
    code = main(["eval", "--weights", str(path), "--report", "--max-images", "10", "--report-dir",
                 str(tmp_path / "rep"), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    res = json.loads(out.strip().splitlines()[-1])
    rows = list(csv.reader((tmp_path / "rep" / "confusion.csv").open()))
    assert rows[0][1:] == embedded.CLASS_NAMES and [r[0] for r in rows[1:]] == embedded.CLASS_NAMES
    matrix = torch.tensor([[int(x) for x in r[1:]] for r in rows[1:]])
    assert matrix.tolist() == expected.tolist()  # every cell, so a transposed matrix fails
    assert int(matrix.sum()) == res["images"] == 10
    assert int(matrix.trace()) == res["correct1"]  # the 1-crop top-1 hits, counted by the existing path
    assert (tmp_path / "rep" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    per = list(csv.DictReader((tmp_path / "rep" / "per_class.csv").open()))
    assert [int(r["images"]) for r in per] == expected.sum(1).tolist()
    assert [int(r["correct"]) for r in per] == expected.diagonal().tolist()
