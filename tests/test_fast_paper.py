"""The paper recipe on the fast decoder draws the same crops, interpolations, flips and distortions as
transforms.paper_train_transform: equal to float rounding on a PNG (full decode; the resize and the photometric
distortions run in C kernels on one side, in PyTorch and torchvision on the other), close on a JPEG small enough
for a full decode."""

import io

import torch
from PIL import Image

from googlenet.data.fast import FastPaperCrop
from googlenet.data.images import load_image
from googlenet.data.transforms import paper_train_transform

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _image(path, fmt):
    g = torch.Generator().manual_seed(0)
    arr = torch.randint(0, 256, (48, 40, 3), generator=g, dtype=torch.uint8).numpy()
    Image.fromarray(arr).save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path


def _both(path, seed):
    fast = FastPaperCrop(32, MEAN, STD)
    ref = paper_train_transform(32, MEAN, STD)
    torch.manual_seed(seed)
    a = fast(path)
    torch.manual_seed(seed)
    b = ref(load_image(path))
    return a, b


def test_png_equal_to_paper_transform(tmp_path):
    path = _image(tmp_path / "a.png", "PNG")
    for seed in range(6):  # covers several interpolations, flips and jitter orders
        a, b = _both(path, seed)
        assert a.shape == b.shape == (3, 32, 32)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_jpeg_close_to_paper_transform(tmp_path):
    path = _image(tmp_path / "a.jpg", "JPEG")
    for seed in range(3):
        a, b = _both(path, seed)
        # libjpeg-turbo (decode_jpeg) vs PIL's libjpeg may round a few pixels by 1/255
        assert (a - b).abs().max() < 0.1


def test_the_first_dct_scaled_decode_of_a_process_takes_the_fast_path(tmp_path):
    """torch warns once a process that Pillow's decoded array is read-only; the decoder's warnings-as-errors must
    not turn that warning into a fall back to the careful loader (in a fresh process, where it is first raised)."""
    import subprocess
    import sys

    path = tmp_path / "big.jpg"
    g = torch.Generator().manual_seed(0)
    Image.fromarray(torch.randint(0, 256, (800, 1000, 3), generator=g, dtype=torch.uint8).numpy()).save(path)
    code = f"""
import torch
from googlenet.data.fast import FastPaperCrop
crop = FastPaperCrop(64, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
torch.manual_seed(0)
params = crop._params(800, 1000)
assert min(params[2], params[3]) >= 256, params  # a crop DCT scaling applies to
assert crop._decode_crop(open({str(path)!r}, "rb").read(), 800, 1000, params) is not None
"""
    subprocess.run([sys.executable, "-c", code], check=True)
