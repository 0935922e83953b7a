"""Crop geometry of the paper's test protocol (section 7), checked box by box, and the crops cut against torchvision."""

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T

import googlenet
from googlenet.cli import main
from googlenet.evaluate.crops import make_crops


def boxes(crops, scale=None, flip=False):
    return [c.box for c in crops if (scale is None or c.scale == scale) and c.flip == flip]


def square_boxes(left, top, s, c=224):
    """tl, tr, bl, br, centre (offset round((s - c) / 2)), whole: written out by hand for the expected lists."""
    m = round((s - c) / 2)
    return [(left, top, left + c, top + c), (left + s - c, top, left + s, top + c),
            (left, top + s - c, left + c, top + s), (left + s - c, top + s - c, left + s, top + s),
            (left + m, top + m, left + m + c, top + m + c), (left, top, left + s, top + s)]


def test_144_landscape_exact_boxes():
    crops = googlenet.crop_boxes(500, 375, "144")
    assert len(crops) == 144
    assert [c.scale for c in crops[::36]] == [256, 288, 320, 352]
    assert all(c.size == 224 for c in crops)
    # 500x375 at shorter side 256 -> 341x256 (floor(256 * 500 / 375) = 341); squares at x = 0, round(85/2) = 42, 85
    assert boxes(crops, 256) == [
        (0, 0, 224, 224), (32, 0, 256, 224), (0, 32, 224, 256), (32, 32, 256, 256), (16, 16, 240, 240),
        (0, 0, 256, 256),
        (42, 0, 266, 224), (74, 0, 298, 224), (42, 32, 266, 256), (74, 32, 298, 256), (58, 16, 282, 240),
        (42, 0, 298, 256),
        (85, 0, 309, 224), (117, 0, 341, 224), (85, 32, 309, 256), (117, 32, 341, 256), (101, 16, 325, 240),
        (85, 0, 341, 256)]
    # 352 -> 469x352: centre square at round(117 / 2) = 58 (half to even), right square at 117
    assert boxes(crops, 352)[6:12] == [(58, 0, 282, 224), (186, 0, 410, 224), (58, 128, 282, 352),
                                       (186, 128, 410, 352), (122, 64, 346, 288), (58, 0, 410, 352)]
    assert boxes(crops, 288) == square_boxes(0, 0, 288) + square_boxes(48, 0, 288) + square_boxes(96, 0, 288)
    assert boxes(crops, 320) == square_boxes(0, 0, 320) + square_boxes(53, 0, 320) + square_boxes(106, 0, 320)
    # every crop appears once plain and once mirrored, with the same box
    assert boxes(crops, flip=True) == boxes(crops, flip=False)


def test_144_portrait_uses_top_centre_bottom_squares():
    crops = googlenet.crop_boxes(375, 500, "144")
    assert len(crops) == 144
    # 375x500 at 256 -> 256x341: squares at y = 0, 42, 85
    assert boxes(crops, 256) == square_boxes(0, 0, 256) + square_boxes(0, 42, 256) + square_boxes(0, 85, 256)
    assert boxes(crops, 352) == square_boxes(0, 0, 352) + square_boxes(0, 58, 352) + square_boxes(0, 117, 352)


@pytest.mark.parametrize("width,height", [(500, 375), (375, 500), (300, 300), (1000, 230), (64, 640)])
@pytest.mark.parametrize("scheme,count", [("1", 1), ("10", 10), ("144", 144)])
def test_counts_and_boxes_inside_the_resized_image(width, height, scheme, count):
    crops = googlenet.crop_boxes(width, height, scheme)
    assert len(crops) == count
    assert sum(c.flip for c in crops) == count // 2
    for c in crops:
        rw, rh = (c.scale, c.scale * height // width) if width <= height else (c.scale * width // height, c.scale)
        left, top, right, bottom = c.box
        assert 0 <= left < right <= rw and 0 <= top < bottom <= rh
        assert right - left == bottom - top  # square: the crop, or a whole square resized to c.size


def test_square_image_squares_coincide():
    crops = googlenet.crop_boxes(300, 300, "144")
    for s in range(4):
        per_scale = crops[36 * s: 36 * (s + 1)]
        assert per_scale[0:12] == per_scale[12:24] == per_scale[24:36]


def test_1_and_10_crops():
    assert googlenet.crop_boxes(500, 375, "1") == [googlenet.Crop(256, (58, 16, 282, 240), 224, False)]
    ten = googlenet.crop_boxes(500, 375, "10")
    assert boxes(ten) == boxes(ten, flip=True) == [(0, 0, 224, 224), (117, 0, 341, 224), (0, 32, 224, 256),
                                                   (117, 32, 341, 256), (58, 16, 282, 240)]
    assert {c.scale for c in ten} == {256}
    # other crop sizes: resize 73 for 64, paper scales scaled by 64 / 224
    assert googlenet.crop_boxes(28, 28, "1", crop_size=64) == [googlenet.Crop(73, (4, 4, 68, 68), 64, False)]
    assert sorted({c.scale for c in googlenet.crop_boxes(28, 28, "144", crop_size=64)}) == [73, 82, 91, 101]


def test_crops_equal_torchvision_resize_centercrop_and_tencrop():
    torch.manual_seed(0)
    img = torch.randint(0, 256, (3, 150, 200), dtype=torch.uint8)
    one = make_crops(img, googlenet.crop_boxes(200, 150, "1", crop_size=96, resize_size=110))
    ref = T.Compose([T.Resize(110, antialias=True), T.CenterCrop(96)])(img)
    assert torch.equal(one[0], ref)
    ten = make_crops(img, googlenet.crop_boxes(200, 150, "10", crop_size=96, resize_size=110))
    tv = T.Compose([T.Resize(110, antialias=True), T.TenCrop(96)])(img)
    assert all(torch.equal(ten[i], tv[i]) for i in range(5))
    # TenCrop flips the image, then cuts: its flipped "top-left" is our mirrored top-right, and so on
    for ours, theirs in [(5, 6), (6, 5), (7, 8), (8, 7), (9, 9)]:
        assert torch.equal(ten[ours], tv[theirs])


def test_whole_square_crop_is_the_square_resized():
    img = torch.randint(0, 256, (3, 90, 120), dtype=torch.uint8)
    crops = googlenet.crop_boxes(120, 90, "144", crop_size=32)
    whole = [i for i, c in enumerate(crops) if c.box[2] - c.box[0] == c.scale][0]
    c = crops[whole]
    out = make_crops(img, [c])[0]
    resized = T.functional.resize(img, [c.scale, c.scale * 120 // 90], antialias=True)
    left, top, right, bottom = c.box
    ref = T.functional.resize(resized[:, top:bottom, left:right], [32, 32], antialias=True)
    assert out.shape == (3, 32, 32) and torch.equal(out, ref)


def test_bad_scheme_is_a_user_error():
    with pytest.raises(googlenet.UserError, match="crop scheme must be one of 1, 10, 144"):
        googlenet.crop_boxes(10, 10, "12")


def test_crops_sheet_png(tmp_path, capsys):
    src = tmp_path / "in.png"
    Image.new("RGB", (120, 90), (200, 30, 30)).save(src)
    out = tmp_path / "sub" / "sheet.png"
    assert main(["crops", str(src), "--scheme", "144", "--out", str(out), "--crop-size", "32"]) == 0
    with Image.open(out) as sheet:
        # 12 x 12 tiles of 112 px, 28 px labels, 4 px gaps: 12*112 + 13*4 by 12*(112+28) + 13*4
        assert sheet.format == "PNG" and sheet.size == (1396, 1732)
    assert main(["crops", str(src), "--scheme", "10", "--out", str(out), "--tile", "50"]) == 0
    with Image.open(out) as sheet:
        assert sheet.size == (5 * 50 + 6 * 4, 2 * (50 + 28) + 3 * 4)
    assert [p.name for p in out.parent.iterdir()] == ["sheet.png"]  # no temp file left behind


def test_crops_bad_inputs_exit_2_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["crops", str(bad), "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("googlenet crops: error:") and "not an image" in err
    assert main(["crops", str(tmp_path / "missing.png"), "--out", str(tmp_path / "s.png")]) == 2
    assert "file not found" in capsys.readouterr().err
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30)).save(good)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["crops", str(good), "--scheme", "1", "--out", str(blocker / "s.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err
    with pytest.raises(SystemExit) as e:
        main(["crops", str(good), "--scheme", "12", "--out", str(tmp_path / "s.png")])
    assert e.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
