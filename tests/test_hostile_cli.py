"""Issue 7: every command meets broken data and mistakes, and each ends in a correct result or one clear line on
stderr with exit code 2: never a traceback, never a hang, nothing already written lost.

Cases are tables (category, command line, expected fragment), so the count per category is visible in the report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import googlenet
from googlenet.cli import main as cli_main
from tests.hostile import bare_hostile_pickle, hostile_pickle, make_bad_files, make_odd_images

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
PRE64 = {"input_size": 64, "resize_size": 64, "interpolation": "bilinear", "mean": [0.286] * 3, "std": [0.353] * 3}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    w = {}
    w["good"] = googlenet.save_model(googlenet.create_model("googlenet", num_classes=10), root / "good.safetensors",
                                     class_names=FASHION, preprocessing=PRE64)
    w["five"] = googlenet.save_model(googlenet.create_model("googlenet_bn", num_classes=5), root / "five.safetensors",
                                     class_names=list("abcde"), preprocessing=PRE64)
    data = w["good"].read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) // 3])
    w["truncated"] = root / "truncated.safetensors"
    w["pickle"] = hostile_pickle(root / "evil.pt", root / "PWNED")
    w["bare_pickle"] = bare_hostile_pickle(root / "evil.safetensors", root / "PWNED")
    # A torchvision-layout checkpoint convert accepts, so that its unwritable-output case fails on the output; cut
    # short, the truncated checkpoint convert meets.
    import torchvision

    tv = root / "tv.pth"
    torch.save(torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).state_dict(), tv)
    w["tv"] = tv
    (root / "tv_cut.pth").write_bytes(tv.read_bytes()[: tv.stat().st_size // 3])
    w["tv_truncated"] = root / "tv_cut.pth"
    odd = make_odd_images(root / "odd")
    bad = make_bad_files(root / "bad")
    # A two-class image folder with good, odd and broken files; a one-class folder; an empty one.
    mixed = root / "mixed"
    for cls in ("Trouser", "Bag"):
        (mixed / "train" / cls).mkdir(parents=True)
        (mixed / "val" / cls).mkdir(parents=True)
    for i, p in enumerate(list(odd.values())[:8]):
        for split in ("train", "val"):
            target = mixed / split / ("Trouser" if i % 2 else "Bag") / f"img{i}{p.suffix}"
            target.write_bytes(p.read_bytes())
    for split in ("train", "val"):
        (mixed / split / "Bag" / "zero.jpg").write_bytes(b"")
        (mixed / split / "Trouser" / "text.jpg").write_text("not an image")
    one = root / "oneclass" / "Trouser"
    one.mkdir(parents=True)
    (one / "a.png").write_bytes(odd["gray.png"].read_bytes())
    (one / "b.png").write_bytes(odd["gray.png"].read_bytes())  # 2 images: a one-folder split can be made
    (root / "empty").mkdir()
    (root / "a_file").write_text("I am a file, not a folder")
    return {"root": root, "w": w, "odd": odd, "bad": bad, "mixed": mixed, "one": root / "oneclass",
            "empty": root / "empty", "blocked": root / "a_file" / "sub", "marker": root / "PWNED"}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = cli_main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(argv, capsys, fragment: str) -> str:
    """The command exits 2 with one stderr line that names ``fragment``: the cause the case sets up (not any error)."""
    assert fragment, "name the cause the case sets up"
    rc, out, err = run_cli(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (argv, rc, err)
    assert "Traceback" not in err
    assert len(lines) == 1, (argv, err)
    assert "error" in lines[0]
    assert fragment.lower() in lines[0].lower(), (fragment, lines[0])
    return lines[0]


def _cases(e) -> list[tuple[str, list, str]]:
    w, r = e["w"], e["root"]
    img = e["odd"]["gray.png"]
    return [
        # category, argv, expected fragment of the error line
        ("missing path", ["train", "--data", r / "nope", "--out", r / "runs_missing"], "data folder not found"),
        ("missing path", ["eval", "--weights", r / "nope.safetensors"], "weights file not found"),
        ("missing path", ["eval", "--weights", w["good"], "--data", r / "nope"], "data folder not found"),
        ("missing path", ["predict", r / "nope.jpg", "--weights", w["good"]], "nope.jpg: file not found"),
        ("missing path", ["predict", img, "--weights", r / "nope.safetensors"], "weights file not found"),
        ("missing path", ["crops", r / "nope.jpg", "--out", r / "sheet.png"], "nope.jpg: file not found"),
        ("missing path", ["export", "--weights", r / "nope.safetensors", "--out", r / "m.onnx"],
         "weights file not found"),
        ("missing path", ["convert", "--from", "torchvision", r / "nope.pth", r / "o.safetensors"],
         "checkpoint not found"),
        ("empty folder", ["train", "--data", e["empty"], "--out", r / "runs_empty"], "has no class folders"),
        ("empty folder", ["eval", "--weights", w["good"], "--data", e["empty"]], "has no class folders"),
        ("empty folder", ["predict", e["empty"], "--weights", w["good"]], "folder holds no files"),
        ("one class", ["train", "--data", e["one"], "--out", r / "runs_one", "--epochs", "1"],
         "has 1 class folder; training needs at least 2"),
        ("not an image", ["predict", e["bad"]["notes.txt"], "--weights", w["good"]], "notes.txt: not an image"),
        ("not an image", ["crops", e["bad"]["not_an_image.jpg"], "--out", r / "s.png"],
         "not_an_image.jpg: not an image"),
        ("zero-byte / truncated", ["predict", e["bad"]["zero_bytes.jpg"], "--weights", w["good"]],
         "zero_bytes.jpg: empty file"),
        ("zero-byte / truncated", ["crops", e["bad"]["truncated.jpg"], "--out", r / "s.png"],
         "image file is truncated"),
        ("decompression bomb", ["predict", e["bad"]["bomb.png"], "--weights", w["good"]], "bomb.png: image too large"),
        ("decompression bomb", ["crops", e["bad"]["bomb.png"], "--out", r / "s.png"], "bomb.png: image too large"),
        ("wrong weights", ["eval", "--weights", w["five"], "--max-images", "8"], "5 classes, not the 10"),
        ("wrong weights", ["eval", "--weights", w["good"], w["five"], "--max-images", "8"],
         "must share their classes"),
        ("wrong weights", ["eval", "--weights", w["five"], "--data", e["mixed"]], "are not classes of the model"),
        ("truncated weights", ["predict", img, "--weights", w["truncated"]], "truncated: the file has"),
        ("truncated weights", ["eval", "--weights", w["truncated"]], "truncated: the file has"),
        ("truncated weights", ["export", "--weights", w["truncated"], "--out", r / "t.onnx"],
         "truncated: the file has"),
        ("truncated weights", ["convert", "--from", "torchvision", w["tv_truncated"], r / "t2.safetensors"],
         "failed finding central directory"),
        ("bad flag", ["train", "--epochs", "0"], "--epochs: expected a positive integer, got 0"),
        ("bad flag", ["train", "--batch-size", "-3"], "--batch-size: expected a positive integer, got -3"),
        ("bad flag", ["train", "--lr", "-1"], "--lr: expected a positive finite number, got -1"),
        ("bad flag", ["train", "--input-size", "32", "--out", r / "runs_flag"], "input_size must be in 64..1024"),
        ("bad flag", ["train", "--arch", "resnet", "--out", r / "runs_flag"], "unknown arch 'resnet'"),
        ("bad flag", ["train", "--recipe", "nope", "--out", r / "runs_flag"], "unknown recipe 'nope'"),
        ("bad flag", ["train", "--precision", "fp16", "--device", "cpu", "--out", r / "runs_flag"],
         "precision fp16 needs a CUDA device"),
        ("bad flag", ["eval", "--weights", w["good"], "--crops", "7"], "--crops: invalid choice: '7'"),
        ("bad flag", ["eval", "--weights", w["good"], "--batch-size", "0"],
         "--batch-size: expected a positive integer"),
        ("bad flag", ["eval", "--weights", w["good"], "--precision", "fp8"], "--precision must be one of"),
        ("bad flag", ["predict", img, "--weights", w["good"], "--topk", "0"], "--topk: expected a positive integer"),
        ("bad flag", ["predict", img, "--weights", w["good"], "--backend", "tensorrt"],
         "--backend must be one of eager"),
        ("bad flag", ["export", "--weights", w["good"], "--out", r / "o.onnx", "--opset", "3"],
         "--opset must be in [11, 20], got 3"),
        ("bad flag", ["export", "--weights", w["good"], "--out", r / "o.onnx", "--batch", "0"],
         "--batch: expected 'dynamic' or a positive integer, got 0"),
        ("bad flag", ["export", "--weights", w["good"], "--out", r / "o.onnx", "--input-size", "32"],
         "--input-size must be in [64, 2048], got 32"),
        ("bad flag", ["summary", "--input-size", "16"], "--input-size must be at least 64, got 16"),
        ("bad flag", ["bench", "infer", "--rounds", "0"], "--rounds: expected a positive integer, got 0"),
        ("bad flag", ["crops", img, "--out", r / "s.png", "--scheme", "12"], "--scheme: invalid choice: '12'"),
        ("bad flag", ["nonsense-command"], "invalid choice: 'nonsense-command'"),
        ("unwritable output", ["train", "--out", e["blocked"], "--epochs", "1", "--max-train-images", "8"],
         "cannot create output folder"),
        ("unwritable output", ["crops", img, "--out", e["blocked"] / "s.png"], "cannot create output folder"),
        ("unwritable output", ["export", "--weights", w["good"], "--out", e["blocked"] / "m.onnx"],
         "cannot create output folder"),
        ("unwritable output", ["convert", "--from", "torchvision", w["tv"], e["blocked"] / "o.safetensors"],
         "cannot create output folder"),
    ]


def _placeholder_env() -> dict:
    """Stands in for the fixture when naming the cases at collection time."""
    from collections import defaultdict

    p = Path("x")
    return {"root": p, "w": defaultdict(lambda: p), "odd": defaultdict(lambda: p), "bad": defaultdict(lambda: p),
            "mixed": p, "one": p, "empty": p, "blocked": p, "marker": p}


CASES = _cases(_placeholder_env())
CASE_IDS = [f"{i:02d}-{cat.replace(' ', '_')}-{argv[0]}" for i, (cat, argv, _) in enumerate(CASES)]


@pytest.mark.parametrize("index", range(len(CASES)), ids=CASE_IDS)
def test_bad_input_is_one_line_exit_2(env, capsys, index):
    category, argv, fragment = _cases(env)[index]
    assert_one_line_error(argv, capsys, fragment)


NOT_SAFETENSORS = "is not a valid googlenet weights file (safetensors): its first 8 bytes declare a"


@pytest.mark.parametrize("argv_of,fragment", [
    (lambda w, img, r: ["predict", img, "--weights", w], NOT_SAFETENSORS),
    (lambda w, img, r: ["eval", "--weights", w, "--max-images", "4"], NOT_SAFETENSORS),
    (lambda w, img, r: ["export", "--weights", w, "--out", r / "x.onnx"], NOT_SAFETENSORS),
    (lambda w, img, r: ["export", "--weights", w, "--format", "torchscript", "--out", r / "x.ts"], NOT_SAFETENSORS),
    (lambda w, img, r: ["convert", "--from", "torchvision", w, r / "x.safetensors"],
     "torch.load(weights_only=True) refuses"),
    (lambda w, img, r: ["bench", "infer", "--weights", w, "--rounds", "1"], NOT_SAFETENSORS),
    (lambda w, img, r: ["train", "--resume", w, "--out", r / "runs_resume", "--epochs", "1"],
     "is not a readable checkpoint: Weights only load failed"),
], ids=["predict", "eval", "export-onnx", "export-torchscript", "convert", "bench", "train-resume"])
@pytest.mark.parametrize("kind", ["pickle", "bare_pickle"])
def test_hostile_pickle_is_refused_and_never_runs(env, capsys, argv_of, fragment, kind):
    argv = argv_of(env["w"][kind], env["odd"]["gray.png"], env["root"])
    line = assert_one_line_error(argv, capsys, fragment)
    assert str(env["w"][kind].name) in line
    assert not env["marker"].exists()


def test_odd_images_are_predicted(env, capsys):
    rc, out, err = run_cli(["predict", env["root"] / "odd", "--weights", env["w"]["good"], "--json"], capsys)
    assert rc == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert len(result["predictions"]) == len(env["odd"]) and result["errors"] == []
    names = {Path(p["image"]).name for p in result["predictions"]}
    assert "name with  spaces .jpg" in names and any("\\xff\\xfe" in n for n in names)
    for p in result["predictions"]:
        probs = [t["prob"] for t in p["topk"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_mixed_folder_predicts_good_files_and_reports_bad_ones(env, capsys):
    rc, out, err = run_cli(["predict", env["root"] / "odd", env["root"] / "bad", "--weights", env["w"]["good"],
                            "--json", "--topk", "3"], capsys)
    assert rc == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert len(result["predictions"]) == len(env["odd"])
    assert sorted(Path(e["image"]).name for e in result["errors"]) == sorted(env["bad"])
    bomb = [e for e in result["errors"] if e["image"].endswith("bomb.png")]
    assert "too large" in bomb[0]["error"]


def test_eval_over_folder_with_bad_files_reports_them(env, capsys):
    rc, out, err = run_cli(["eval", "--weights", env["w"]["good"], "--data", env["mixed"], "--json"], capsys)
    assert rc == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["images"] == 8 and len(result["skipped_files"]) == 2  # val/: zero.jpg, text.jpg


def test_eval_on_one_class_folder_works(env, capsys):
    rc, out, err = run_cli(["eval", "--weights", env["w"]["good"], "--data", env["one"], "--json"], capsys)
    assert rc == 0, err
    assert json.loads(out.strip().splitlines()[-1])["images"] == 2


@pytest.mark.slow
def test_train_on_folder_with_bad_files_finishes_and_reports_them(env, capsys):
    out_dir = env["root"] / "runs_mixed"
    rc, out, err = run_cli(["train", "--data", env["mixed"], "--out", out_dir, "--epochs", "1", "--batch-size", "4",
                            "--input-size", "64", "--workers", "0", "--json"], capsys)
    assert rc == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert len(result["skipped_files"]) >= 2  # the zero-byte and text files of train/ (and val/)
    assert googlenet.load_model(result["weights"]).num_classes == 2


def test_existing_output_survives_a_failed_export(env, capsys):
    target = env["root"] / "keep.onnx"
    target.write_bytes(b"previous content")
    assert_one_line_error(["export", "--weights", env["w"]["truncated"], "--out", target], capsys,
                          "truncated: the file has")
    assert target.read_bytes() == b"previous content"


def test_console_script_never_prints_a_traceback(env):
    exe = Path(sys.executable).with_name("googlenet")
    for argv in (["predict", str(env["root"] / "nope.jpg"), "--weights", str(env["w"]["good"])],
                 ["eval", "--weights", str(env["w"]["pickle"])], ["train", "--epochs", "-1"]):
        p = subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert p.returncode == 2 and "Traceback" not in p.stderr
        assert len([ln for ln in p.stderr.splitlines() if ln.strip()]) == 1, p.stderr
    assert not env["marker"].exists()


# ---- Tampered weights metadata, odd config values, images no crop can be cut from (found in review) ----

def _tampered(root: Path, name: str, change) -> Path:
    """good.safetensors' tensors re-saved with one change to the metadata JSON."""
    from safetensors.torch import load_file, save_file

    from googlenet.weights import read_metadata

    src = root / "good.safetensors"
    meta = json.loads(json.dumps(read_metadata(src)))
    meta = change(meta)
    out = root / f"tampered_{name}.safetensors"
    save_file(load_file(str(src)), str(out), metadata={"googlenet": json.dumps(meta)})
    return out


TAMPERED = {  # the change, and the cause every command names (after the file's name)
    "input_size_0": (lambda m: {**m, "preprocessing": {**m["preprocessing"], "input_size": 0}},
                     "preprocessing input_size must be an integer in [64, 2048], got 0"),
    "input_size_str": (lambda m: {**m, "preprocessing": {**m["preprocessing"], "input_size": "abc"}},
                       "preprocessing input_size must be an integer in [64, 2048], got 'abc'"),
    "mean_len_2": (lambda m: {**m, "preprocessing": {**m["preprocessing"], "mean": [0.1, 0.2]}},
                   "preprocessing mean must be 3 finite numbers, got [0.1, 0.2]"),
    "std_zero": (lambda m: {**m, "preprocessing": {**m["preprocessing"], "std": [0, 0, 0]}},
                 "preprocessing std must be 3 finite numbers above 0, got [0, 0, 0]"),
    "preprocessing_list": (lambda m: {**m, "preprocessing": [1, 2]}, "preprocessing must be a JSON object"),
    "metadata_list": (lambda m: [1, 2], "googlenet metadata is a JSON list, not an object"),
    "metadata_str": (lambda m: "x", "googlenet metadata is a JSON str, not an object"),
    "class_names_not_str": (lambda m: {**m, "class_names": [1] * 10}, "class names must be strings"),
    "aux_logits_str": (lambda m: {**m, "aux_logits": "yes"}, "aux_logits must be true or false, got 'yes'"),
    "options_list": (lambda m: {**m, "options": [1]}, "options must be a JSON object"),
}


@pytest.mark.parametrize("name", sorted(TAMPERED))
@pytest.mark.parametrize("command", ["predict", "eval", "export"])
def test_tampered_metadata_is_one_line_exit_2(env, capsys, name, command):
    change, cause = TAMPERED[name]
    w = _tampered(env["root"], name, change)
    argv = {"predict": ["predict", env["odd"]["gray.png"], "--weights", w],
            "eval": ["eval", "--weights", w, "--max-images", "4"],
            "export": ["export", "--weights", w, "--out", env["root"] / f"{name}.onnx"]}[command]
    assert_one_line_error(argv, capsys, f"{w.name}: {cause}")


def test_bad_betas_in_config_is_one_line(env, capsys, tmp_path):
    cfg = tmp_path / "betas.yaml"
    cfg.write_text("betas: [5, 5]\nepochs: 1\nmax_train_images: 8\nmax_eval_images: 8\n")
    assert_one_line_error(["train", "--config", cfg, "--out", tmp_path / "run"], capsys, "betas")


def test_image_with_extreme_aspect_ratio_is_skipped_not_fatal(env, capsys, tmp_path):
    from PIL import Image

    strip = tmp_path / "strip.png"
    Image.new("L", (1, 3_000_000)).save(strip)  # decodes to 3 MB, but shorter side 64 would be 192 M pixels
    good = env["odd"]["gray.png"]
    rc, out, err = run_cli(["predict", strip, good, "--weights", env["w"]["good"], "--json"], capsys)
    assert rc == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert len(result["predictions"]) == 1 and "aspect ratio" in result["errors"][0]["error"]


@pytest.mark.parametrize("flags,fragment", [
    (["--tile", "100000"], "--tile must be in [16, 512], got 100000"),
    (["--crop-size", "100000"], "--crop-size must be in [16, 2048], got 100000"),
    (["--resize-size", "5"], "--resize-size must be in [crop size, 4 x crop size] = [224, 896], got 5")])
def test_crops_sheet_size_flags_are_bounded(env, capsys, flags, fragment):
    assert_one_line_error(["crops", env["odd"]["gray.png"], "--out", env["root"] / "big.png", *flags], capsys,
                          fragment)
