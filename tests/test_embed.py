"""googlenet embed: pooled features against an independent forward hook on the same model with torchvision's
preprocessing, labels from class folders, resume after an interrupted run, refused reruns, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

import googlenet
from googlenet.cli import main
from googlenet.embedding import load_npz, store
from googlenet.errors import UserError
from googlenet.weights import load_model

# Caffe's convention (BVLC): BGR, pixels 0..255, mean in that scale, no std; at 64x64 to stay fast.
BGR = {"input_size": 64, "resize_size": 73, "interpolation": "bilinear", "mean": [104.0, 117.0, 123.0],
       "std": [1.0, 1.0, 1.0], "channel_order": "BGR", "pixel_range": 255}
RGB = {"input_size": 64, "resize_size": 80, "interpolation": "bilinear", "mean": [0.4, 0.5, 0.6],
       "std": [0.2, 0.25, 0.3]}


def _weights(folder, arch, pre, seed=0):
    torch.manual_seed(seed)
    path = folder / f"{arch}-{seed}.safetensors"
    googlenet.save_model(googlenet.create_model(arch, num_classes=3, aux_logits=False), path,
                         class_names=["a", "b", "c"], preprocessing=pre)
    return str(path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return _weights(tmp_path_factory.mktemp("w"), "googlenet", BGR)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """DIR/<class>/*: 2 + 3 images of odd sizes (a grey and a portrait one), plus one file that is no image."""
    root = tmp_path_factory.mktemp("classes")
    g = np.random.default_rng(0)
    sizes = {"cats": [(90, 70), (64, 100)], "dogs": [(120, 80), (77, 77), (66, 140)]}
    for cls, shapes in sizes.items():
        (root / cls).mkdir()
        for i, (w, h) in enumerate(shapes):
            mode = "L" if (cls, i) == ("dogs", 1) else "RGB"
            arr = g.integers(0, 256, (h, w) if mode == "L" else (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr, mode).save(root / cls / f"{i}.png")
    (root / "dogs" / "notes.txt").write_text("not an image")
    return root


def hook_features(weights, files, layer):
    """The reference: torchvision's Resize + CenterCrop, the preprocessing written out by hand, the model loaded
    on its own, and a forward hook on ``layer`` (torchvision-style feature extraction), averaged over H and W."""
    model = load_model(weights).eval()
    pre = model.preprocessing
    view = v2.Compose([v2.Resize(pre["resize_size"], antialias=True), v2.CenterCrop(pre["input_size"])])
    rows = []
    for f in files:
        img = torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)
        x = view(img).float()
        if pre.get("pixel_range", 1) == 1:
            x = x / 255
        if pre.get("channel_order") == "BGR":
            x = x[[2, 1, 0]]
        x = (x - torch.tensor(pre["mean"]).view(3, 1, 1)) / torch.tensor(pre["std"]).view(3, 1, 1)
        out = []
        handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: out.append(o))
        with torch.no_grad():
            model(x.unsqueeze(0))
        handle.remove()
        rows.append(out[0].mean(dim=(2, 3)).flatten())
    return torch.stack(rows).numpy()


def test_default_features_labels_and_npz_match_a_forward_hook(weights, images, tmp_path):
    out = tmp_path / "feats.npz"
    r = googlenet.embed(str(images), weights, out=str(out), batch_size=2, progress=False)
    names = ["cats/0.png", "cats/1.png", "dogs/0.png", "dogs/1.png", "dogs/2.png"]
    assert r.paths == names and r.class_names == ["cats", "dogs"] and r.layer == "avgpool"
    assert r.labels.tolist() == [0, 0, 1, 1, 1] and r.features.shape == (5, 1024) and r.features.dtype == np.float32
    assert r.skipped == [{"file": "dogs/notes.txt", "error": "not an image (unrecognised format)"}]
    ref = hook_features(weights, [images / n for n in names], "avgpool")
    np.testing.assert_allclose(r.features, ref, rtol=1e-5, atol=1e-5)
    z = load_npz(out)
    assert z["features"].dtype == np.float32 and np.array_equal(z["features"], r.features)
    assert z["paths"].tolist() == names and z["labels"].tolist() == [0, 0, 1, 1, 1]
    assert z["class_names"].tolist() == ["cats", "dogs"] and str(z["layer"]) == "avgpool"
    assert str(z["weights"]) == weights and z["skipped_paths"].tolist() == ["dogs/notes.txt"]
    assert not os.path.exists(f"{out}.partial")  # the chunks go once OUT is complete


def test_layer_features_on_a_batchnorm_arch_match_a_forward_hook(images, tmp_path):
    w = _weights(tmp_path, "googlenet_bn", RGB)
    r = googlenet.embed(str(images / "dogs" / "0.png"), w, layer="inception3b", progress=False)
    assert r.features.shape == (1, 480) and r.labels.tolist() == [-1] and r.paths == ["0.png"]
    ref = hook_features(w, [images / "dogs" / "0.png"], "inception3b")
    # BatchNorm is folded into the convolutions on the inference path: equal up to float rounding
    np.testing.assert_allclose(r.features, ref, rtol=1e-5, atol=1e-5)
    r = googlenet.embed(str(images / "dogs"), w, layer="inception4a.branch2", progress=False)
    assert r.features.shape == (3, 208) and r.class_names == [] and r.labels.tolist() == [-1, -1, -1]


class Stop(Exception):
    pass


def _interrupt_after_first_chunk(monkeypatch):
    real = store.Partial.add
    calls = []

    def add(self, *args):
        if calls:
            raise Stop  # a kill between two chunks
        calls.append(1)
        return real(self, *args)

    monkeypatch.setattr(store.Partial, "add", add)
    return lambda: monkeypatch.setattr(store.Partial, "add", real)


def test_an_interrupted_run_resumes_and_gives_the_full_runs_array(weights, images, tmp_path, monkeypatch):
    full = googlenet.embed(str(images), weights, batch_size=2, chunk=2, progress=False)
    out = tmp_path / "f.npz"
    undo = _interrupt_after_first_chunk(monkeypatch)
    with pytest.raises(Stop):
        googlenet.embed(str(images), weights, out=str(out), batch_size=2, chunk=2, progress=False)
    undo()
    assert not out.exists() and os.path.isfile(f"{out}.partial/chunk-000000000.npz")
    r = googlenet.embed(str(images), weights, out=str(out), batch_size=2, chunk=2, progress=False)
    assert r.resumed == 2 and r.computed == 4  # 6 files: the first chunk of 2 is not read again
    np.testing.assert_allclose(load_npz(out)["features"], full.features, rtol=0, atol=1e-6)
    assert load_npz(out)["paths"].tolist() == full.paths and r.skipped == full.skipped


def test_a_changed_file_list_or_weights_is_refused_then_restarted(weights, images, tmp_path, monkeypatch):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(images, data)
    out = tmp_path / "f.npz"
    undo = _interrupt_after_first_chunk(monkeypatch)
    with pytest.raises(Stop):
        googlenet.embed(str(data), weights, out=str(out), batch_size=2, chunk=2, progress=False)
    undo()
    other = _weights(tmp_path, "googlenet", BGR, seed=1)
    with pytest.raises(UserError, match=r"partial run for other arguments: the weights differ"):
        googlenet.embed(str(data), other, out=str(out), chunk=2, progress=False)
    with pytest.raises(UserError, match=r"the layer differs"):
        googlenet.embed(str(data), weights, out=str(out), layer="inception5b", chunk=2, progress=False)
    shutil.copy(data / "cats" / "0.png", data / "cats" / "new.png")
    with pytest.raises(UserError, match=r"the file list differs \(6 files then, 7 now\); pass --restart"):
        googlenet.embed(str(data), weights, out=str(out), chunk=2, progress=False)
    r = googlenet.embed(str(data), weights, out=str(out), chunk=2, restart=True, progress=False)
    assert r.resumed == 0 and r.computed == 7 and len(r.paths) == 6


def test_cli_writes_the_npz_and_reports_bad_files(weights, images, tmp_path, capsys):
    out = tmp_path / "f.npz"
    assert main(["embed", str(images / "cats"), "--weights", weights, "--out", str(out), "--layer", "conv3"]) == 0
    captured = capsys.readouterr()
    assert f"{out}: 2 images x 192 features (conv3), 0 classes, 0 skipped" in captured.out
    z = load_npz(out)
    assert z["features"].shape == (2, 192) and z["labels"].tolist() == [-1, -1] and z["class_names"].shape == (0,)


def test_a_tampered_manifest_is_refused(weights, images, tmp_path):
    out = tmp_path / "f.npz"
    (tmp_path / "f.npz.partial").mkdir()
    fingerprint = {"weights": "?", "layer": "avgpool", "precision": "fp32", "files": "?", "count": 6}
    (tmp_path / "f.npz.partial" / "manifest.json").write_text(
        '{"fingerprint": %s, "chunks": [{"start": 0, "stop": 2, "file": "../../etc/passwd", "rows": 2, "dim": 1}]}'
        % json.dumps(fingerprint))
    with pytest.raises(UserError, match=r"is not a manifest of embed .*does not follow.*pass --restart"):
        googlenet.embed(str(images), weights, out=str(out), progress=False)


@pytest.mark.parametrize("case", ["missing", "unknown_layer", "bad_weights", "bad_image", "nothing_readable",
                                  "out_is_folder"])
def test_user_errors_are_one_line_exit_2(weights, images, tmp_path, capsys, case):
    target, w, extra = str(images), weights, []
    if case == "missing":
        target = str(tmp_path / "nope")
    elif case == "unknown_layer":
        extra = ["--layer", "inception9z"]
    elif case == "bad_weights":
        w = str(tmp_path / "w.safetensors")
        with open(weights, "rb") as f:
            open(w, "wb").write(f.read()[:5000])  # truncated
    elif case == "bad_image":
        target = str(images / "dogs" / "notes.txt")
    elif case == "out_is_folder":
        (tmp_path / "f.npz").mkdir()
    else:
        (tmp_path / "junk").mkdir()
        (tmp_path / "junk" / "x.jpg").write_bytes(b"\xff\xd8\xff junk")
        target = str(tmp_path / "junk")
    out = tmp_path / "f.npz"
    assert main(["embed", target, "--weights", w, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("googlenet embed: error: "), err
    expected = {"missing": "not found: ", "unknown_layer": "no layer 'inception9z' in googlenet (e.g. ",
                "bad_weights": "is not a valid googlenet weights file", "bad_image": "notes.txt: not an image",
                "nothing_readable": "no readable image among 1 file(s) (first: x.jpg: ",
                "out_is_folder": "is a folder; name an .npz file"}[case]
    assert expected in err[0]
    assert (case == "out_is_folder" or not out.exists()) and not os.path.exists(f"{out}.partial")


def test_python_m_googlenet_embed_exit_code_and_stderr(weights, images, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    bad = subprocess.run([sys.executable, "-m", "googlenet", "embed", str(images), "--weights", weights, "--out",
                          str(tmp_path / "f.npz"), "--layer", "fc"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("googlenet embed: error: no layer 'fc' in googlenet") and bad.stderr.count("\n") == 1
