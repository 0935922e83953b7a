"""googlenet atlas: the page, its images, the top-k ranking against an independent hook, escaping, one-line errors,
and the page in a real browser (headless Chromium from disk)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from googlenet.cli import main
from googlenet.errors import UserError
from googlenet.interpret.atlas import parse_channels
from googlenet.models import create_model
from googlenet.weights import default_preprocessing, save_model

LAYER = "inception3a.branch1.conv"  # before its ReLU: no channel of a random net is dead, so no ties at zero
SCRIPT_NAME = "\"><script>alert('x')<script>.png"  # a file name cannot hold '/'


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("atlas") / "tiny.safetensors"
    pre = {**default_preprocessing(64), "resize_size": 73}  # a real resize + centre crop: 80 -> 73 -> 64
    save_model(create_model("googlenet", num_classes=4), path, class_names=list("abcd"), preprocessing=pre)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Eleven 80x80 pictures (stripes and blobs of different frequencies and colours), two in a class folder, one
    named like a script, plus a text file that is not an image."""
    root = tmp_path_factory.mktemp("images")
    (root / "cats").mkdir()
    yy, xx = np.mgrid[0:80, 0:80] / 80.0
    names = [f"img{i:02d}.png" for i in range(8)] + [SCRIPT_NAME, "cats/one.png", "cats/two.png"]
    for i, name in enumerate(names):
        f = 1 + i % 5
        rgb = np.stack([np.sin(2 * np.pi * f * xx + i), np.cos(2 * np.pi * (i % 3 + 1) * yy), xx * yy * (i / 10)], -1)
        Image.fromarray(((rgb * 0.5 + 0.5) * 255).clip(0, 255).astype(np.uint8)).save(root / name)
    (root / "notes.txt").write_text("not an image")
    return root


def run_atlas(weights, data, out, *extra) -> int:
    return main(["atlas", "--weights", str(weights), "--layer", LAYER, "--data", str(data), "--out", str(out),
                 "--steps", "2", "--size", "32", *extra])


def page_rows(page: str) -> dict[int, list[tuple[str, float]]]:
    """channel -> [(image name, activation)] as the page shows them, in order."""
    rows = {}
    for c, body in re.findall(r'<section class="channel" id="channel-(\d+)">(.*?)</section>', page, re.S):
        tops = re.findall(r'<figure class="top"><img src="[^"]+" alt="([^"]*)"><figcaption><b>\d+\.</b> ([^<]+)<br>',
                          body)
        rows[int(c)] = [(html.unescape(n), float(v)) for n, v in tops]
    return rows


def reference_means(weights, folder: Path, names: list[str]) -> torch.Tensor:
    """Independent of the atlas code: PIL decode, torchvision Resize(73) + CenterCrop(64), normalise, a forward
    hook on the layer of a freshly loaded model; the mean over positions of every channel."""
    from torchvision.transforms import v2

    from googlenet.weights import load_model

    model = load_model(weights).eval()
    pre = model.preprocessing
    crop = v2.Compose([v2.PILToTensor(), v2.Resize(73, antialias=True), v2.CenterCrop(64),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(pre["mean"], pre["std"])])
    x = torch.stack([crop(Image.open(folder / n).convert("RGB")) for n in names])
    seen = []
    # The mean is taken inside the hook: the in-place ReLU after the conv overwrites its output later on.
    handle = model.get_submodule(LAYER).register_forward_hook(lambda m, i, o: seen.append(o.mean((-2, -1))))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]  # N x C


def test_page_images_and_top_k_match_an_independent_hook(weights, folder, tmp_path, capsys):
    out = tmp_path / "atlas"
    assert run_atlas(weights, folder, out, "--channels", "0-2,7", "--top", "3") == 0
    assert "1 unreadable file(s) left out" in capsys.readouterr().err
    page = (out / "index.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == 4 * (1 + 3)
    for src in srcs:
        assert "/" not in src and (out / src).is_file()  # relative links to files beside the page
        assert Image.open(out / src).size in ((32, 32), (64, 64))
    assert not re.search(r"(src|href)=\"(https?:|//|file:)", page) and "<script" not in page
    assert html.escape(SCRIPT_NAME) in page  # the file name, shown escaped
    assert "notes.txt" in page and "tiny.safetensors" in page and "googlenet" in page

    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png"))
    ref = reference_means(weights, folder, names)
    rows = page_rows(page)
    assert list(rows) == [0, 1, 2, 7]
    for c, shown in rows.items():
        values, idx = ref[:, c].topk(3)
        assert [n for n, _ in shown] == [names[i] for i in idx.tolist()]
        assert [v for _, v in shown] == pytest.approx(values.tolist(), rel=2e-3, abs=1e-4)  # shown with 4 digits
    assert "cats<br>" in page  # a file in a class folder is labelled by it


def test_embedded_data_grey_images_and_limit(weights, tmp_path, capsys):
    import googlenet

    grey = tmp_path / "grey.safetensors"
    torch.manual_seed(1)
    save_model(create_model("googlenet", num_classes=10), grey, class_names=googlenet.data.embedded.CLASS_NAMES,
               preprocessing={**default_preprocessing(64), "resize_size": 64, "grayscale": True})
    out = tmp_path / "atlas"
    assert run_atlas(grey, "embedded", out, "--channels", "2", "--top", "4", "--limit", "24") == 0
    page = (out / "index.html").read_text()
    assert len(re.findall(r"<img ", page)) == 2 * (1 + 4)
    assert "24 of 2000 images" in page and "held-out #" in page
    rows = page_rows(page)
    assert all(len(r) == 4 and [v for _, v in r] == sorted((v for _, v in r), reverse=True) for r in rows.values())
    shown = np.asarray(Image.open(out / re.findall(r'src="(image_\d+\.png)"', page)[0]))
    assert (shown[..., 0] == shown[..., 1]).all() and (shown[..., 1] == shown[..., 2]).all()  # grey as seen


def test_python_api_returns_tensors(weights, folder, tmp_path):
    from googlenet.interpret import build_atlas, open_source, write_atlas
    from googlenet.weights import load_model

    source = open_source(str(folder))
    atlas = build_atlas(load_model(weights), LAYER, source, [5, 1], top=2, steps=1, size=32, progress=False)
    assert atlas.channels == [5, 1] and atlas.layer_channels == 64
    assert atlas.visualizations.shape == (2, 3, 32, 32) and atlas.activations.shape == (11, 2)
    assert atlas.top_items.shape == atlas.top_values.shape == (2, 2) and len(atlas.skipped) == 1
    assert torch.equal(atlas.top_values, atlas.activations.t().topk(2).values)
    model = load_model(weights)
    with torch.no_grad():
        model.get_submodule(LAYER).weight[5] = 0  # channel 5 is its bias on every image: a tie, said on the page
    atlas = build_atlas(model, LAYER, source, [5, 1], top=2, steps=1, size=32, progress=False)
    page = write_atlas(atlas, source, tmp_path / "atlas", info={"weights": "w"}).read_text()
    assert page.count("the same activation") == 1 and "on all 11 images" in page.split('id="channel-1"')[0]
    with pytest.raises(UserError, match="channel 64 out of range"):
        build_atlas(load_model(weights), LAYER, source, [1, 64], steps=1, size=32, progress=False)


def test_parse_channels():
    assert parse_channels(None, 512) == list(range(16)) and parse_channels(None, 10) == list(range(10))
    assert parse_channels("4", 512) == [0, 1, 2, 3] and parse_channels("all", 3) == [0, 1, 2]
    assert parse_channels("9,2-4,3", 16) == [9, 2, 3, 4] and parse_channels("5,", 16) == [5]
    with pytest.raises(UserError, match="channel 16 out of range: the layer has 16 channels"):
        parse_channels("15-16", 16)
    with pytest.raises(UserError, match="expected a count"):
        parse_channels("a-b", 16)


@pytest.mark.parametrize("args, message", [
    (["--layer", "inception9z"], "no layer 'inception9z'"),
    (["--channels", "64"], None),  # a count above the layer's channels is all of them: not an error
    (["--channels", "70,"], "channel 70 out of range: the layer has 64 channels (0..63)"),
    (["--data", "EMPTY"], "no files found under"),
    (["--data", "ONLYTEXT"], "no readable image in"),
    (["--data", "MISSING"], "--data: not a folder"),
    (["--weights", "BADWEIGHTS"], "BADWEIGHTS"),
    (["--top", "100000"], "--top at most 256, got 100000"),
    (["--device", "tpu"], "--device must be cpu or cuda[:N], got 'tpu'"),
])
def test_user_errors_are_one_line_and_keep_the_old_page(weights, folder, tmp_path, capsys, args, message):
    out = tmp_path / "atlas"
    assert run_atlas(weights, folder, out, "--channels", "1,", "--top", "1") == 0
    before = (out / "index.html").read_text()
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "ONLYTEXT").mkdir()
    (tmp_path / "ONLYTEXT" / "a.png").write_text("not a png")
    (tmp_path / "BADWEIGHTS").write_text("not weights")
    capsys.readouterr()
    flags = {"--layer": LAYER, "--data": str(folder), "--weights": str(weights), "--channels": "1,", "--top": "1"}
    flags.update({k: str(tmp_path / v) if v.isupper() else v for k, v in zip(args[::2], args[1::2])})
    code = main(["atlas", *sum(([k, v] for k, v in flags.items()), []), "--out", str(out), "--steps", "1",
                 "--size", "32"])
    err = capsys.readouterr().err.strip()
    if message is None:
        assert code == 0
        return
    assert code == 2 and message in err and len(err.splitlines()) == 1 and err.startswith("googlenet atlas: error:")
    assert (out / "index.html").read_text() == before


@pytest.mark.slow
def test_page_renders_in_headless_chromium(weights, folder, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.browser import chromium_driver

    out = tmp_path / "atlas"
    assert run_atlas(weights, folder, out, "--channels", "3", "--top", "4") == 0
    driver = chromium_driver(1000, 700)
    try:
        driver.get((out / "index.html").resolve().as_uri())
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
        counts = driver.execute_script(
            "const imgs = [...document.images];"
            "return [imgs.length, imgs.filter(i => i.complete && i.naturalWidth > 0).length,"
            "        document.querySelectorAll('section.channel').length, document.title];")
        assert counts[:3] == [3 * (1 + 4), 3 * (1 + 4), 3]
        assert counts[3].startswith(f"Atlas of {LAYER}")
        shot = tmp_path / "atlas.png"
        assert driver.save_screenshot(str(shot))
        assert Image.open(shot).size == (1000, driver.execute_script("return window.innerHeight"))
        assert np.asarray(Image.open(shot).convert("L")).std() > 10  # images and text, not a blank page
    finally:
        driver.quit()
