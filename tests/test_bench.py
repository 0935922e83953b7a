"""``googlenet bench infer|train``: smoke runs at tiny sizes producing the JSON schema (speeds are never asserted)."""

import json

import pytest

from googlenet.cli import main

ROW_KEYS = {"name", "role", "precision", "batch_size", "images_per_s", "ms_per_batch", "spread"}




def _last_json(capsys) -> dict:
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) >= {"machine", "versions", "results"}
    assert {"cpu", "cores", "threads", "gpu"} <= set(out["machine"])
    assert {"torch", "torchvision", "python"} <= set(out["versions"])
    for r in out["results"]:
        assert ROW_KEYS <= set(r), r
        assert r["role"] in ("project", "reference") and r["images_per_s"] > 0 and r["spread"] >= 0
    return out


@pytest.mark.slow
def test_bench_infer_smoke(capsys):
    pytest.importorskip("onnxruntime")
    assert main(["bench", "infer", "--batch-size", "2", "--input-size", "64", "--rounds", "1", "--precision", "fp32",
                 "int8", "--json"]) == 0
    out = _last_json(capsys)
    rows = {(r["name"], r["batch_size"]) for r in out["results"]}
    assert ("onnxruntime fp32 (torchvision export)", 2) in rows and ("onnxruntime fp32 (torchvision export)", 1) in rows
    assert ("torchvision eager fp32 channels_last", 2) in rows
    project = [r for r in out["results"] if r["role"] == "project"]
    assert {(r["precision"], r["backend"]) for r in project} == {("fp32", "eager"), ("fp32", "onnxruntime"),
                                                                 ("int8", "onnxruntime")}
    for r in project:
        assert r["ratios"]["onnxruntime fp32 (torchvision export)"] > 0
        if r["precision"] != "fp32":  # no trained weights: said so, no number invented
            assert r["top1_agreement"].startswith("not measured")


def test_bench_train_smoke(capsys):
    assert main(["bench", "train", "--batch-size", "2", "--input-size", "64", "--rounds", "1",
                 "--precision", "bf16", "--json"]) == 0
    out = _last_json(capsys)
    assert [r["role"] for r in out["results"]] == ["reference", "project"]
    assert out["results"][1]["precision"] == "bf16"


@pytest.mark.parametrize("argv,message", [
    (["bench", "train", "--precision", "int8"], "bench train: --precision int8 is inference-only"),
    (["bench", "infer", "--input-size", "32"], "--input-size must be in [64, 2048], got 32"),
    (["bench", "infer", "--arch", "resnet"], "unknown arch 'resnet'"),
])
def test_bench_user_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
