"""Image decoding: odd files are converted, bad ones refused in one line, bombs refused before decoding."""

import time

import pytest
import torch

from googlenet.data.folder import ImageFolderDataset, Sample, Skipped, collate_skipping, printable
from googlenet.data.images import BadImage, load_image
from tests.hostile import exif_rotated_jpeg, make_bad_files, make_odd_images, peak_rss_growth, png_bomb


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    return make_odd_images(tmp_path_factory.mktemp("odd"))


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return make_bad_files(tmp_path_factory.mktemp("bad"), bomb=False)


ODD_SIZES = {"gray.png": (32, 48), "cmyk.jpg": (32, 48), "rgba.png": (32, 48), "palette.png": (32, 48),
             "one_by_one.png": (1, 1), "image.webp": (32, 48), "image.bmp": (32, 48), "sixteen_bit.png": (32, 48),
             "animated.gif": (30, 30), "exif_rotated.jpg": (40, 20), "name with  spaces .jpg": (32, 48),
             "non_utf8": (32, 48)}


@pytest.mark.parametrize("name", sorted(ODD_SIZES))
def test_odd_images_are_converted(odd, name):
    img = load_image(odd[name])
    assert img.dtype == torch.uint8 and img.shape == (3, *ODD_SIZES[name])


def test_exif_orientation_is_respected(tmp_path):
    img = load_image(exif_rotated_jpeg(tmp_path / "r.jpg"))
    assert img.shape == (3, 40, 20)
    top, bottom = img[:, :15].float().mean((1, 2)), img[:, 25:].float().mean((1, 2))
    assert top[0] > 200 and top[2] < 60  # red on top after the 90 degree rotation
    assert bottom[2] > 200 and bottom[0] < 60


def test_sixteen_bit_is_rescaled_not_clipped(odd):
    img = load_image(odd["sixteen_bit.png"]).float()
    ref = load_image(odd["gray.png"]).float()
    assert (img - ref).abs().max() <= 1  # 16-bit values v*257 map back to v, not to a white image


def test_alpha_is_composited_over_white(tmp_path):
    from PIL import Image

    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert load_image(tmp_path / "clear.png").min() == 255


@pytest.mark.parametrize("name,reason", [("zero_bytes.jpg", "empty file"), ("truncated.jpg", "cannot decode"),
                                         ("not_an_image.jpg", "not an image"), ("notes.txt", "not an image"),
                                         ("truncated.png", "")])
def test_bad_files_are_refused_in_one_line(bad, name, reason):
    with pytest.raises(BadImage) as e:
        load_image(bad[name])
    assert reason in str(e.value) and "\n" not in str(e.value)


def test_missing_and_directory(tmp_path):
    with pytest.raises(BadImage, match="not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(BadImage, match="directory"):
        load_image(tmp_path)


def test_decompression_bomb_is_refused_without_decoding(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 2_000_000
    t0 = time.perf_counter()
    with peak_rss_growth() as grown, pytest.raises(BadImage, match="too large"):
        load_image(bomb)
    assert time.perf_counter() - t0 < 5  # refused from the header, not after decoding 900 MB
    assert grown["kib"] < 200_000, grown


def test_folder_dataset_skips_bad_files_and_reports_them(odd, bad):
    samples = [Sample(str(p), 0) for p in odd.values()] + [Sample(str(p), 1) for p in bad.values()]
    ds = ImageFolderDataset(samples, transform=lambda t: t[:, :1, :1].float())
    images, labels, skipped = collate_skipping([ds[i] for i in range(len(ds))])
    assert images.shape == (len(odd), 3, 1, 1) and labels.tolist() == [0] * len(odd)
    assert sorted(s.path for s in skipped) == sorted(str(p) for p in bad.values())
    assert all(isinstance(s, Skipped) and s.reason for s in skipped)


def test_printable_handles_non_utf8_names(odd):
    text = printable(odd["non_utf8"])
    text.encode("utf-8")  # printable and JSON-safe
    assert "\\xff\\xfe" in text
