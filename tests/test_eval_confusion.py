"""eval --report: per-class accuracy and confusion matrix (CSV, PNG) equal to counts computed independently from
the model's own predictions."""

from __future__ import annotations

import csv
import json

import pytest
import torch

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
    torch.manual_seed(0)
    model = create_model("googlenet_bn", num_classes=10, aux_logits=False)
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
    assert int(matrix.sum()) == res["images"] == 10
    assert int(matrix.trace()) == res["correct1"]  # the 1-crop top-1 hits, counted by the existing path
    assert (tmp_path / "rep" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    per = list(csv.DictReader((tmp_path / "rep" / "per_class.csv").open()))
    assert [int(r["images"]) for r in per] == matrix.sum(1).tolist()
