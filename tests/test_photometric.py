"""The photometric kernel (googlenet.data.photometric) against the transforms it stands for, run by torchvision
and PyTorch: the same draws, the same numbers to float rounding."""

import pytest
import torch
from torchvision.transforms import v2

from googlenet.data import photometric
from googlenet.data.transforms import Lighting, ModelNormalize, Normalize
from tests.system_packages import missing

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def need_kernel():
    if photometric.kernel() is None:
        missing("the photometric kernel was not built: no C compiler", "gcc and libc6-dev")


def images():
    g = torch.Generator().manual_seed(0)
    yield torch.rand(3, 37, 53, generator=g)
    yield torch.rand(3, 224, 224, generator=g).pow(4)  # mostly dark: brightness and contrast clamp at 0 and 1
    yield torch.full((3, 8, 8), 0.5)  # flat: contrast's mean is the image
    yield (torch.rand(3, 64, 64, generator=g) > 0.5).float()  # only 0 and 1


def both(x, jitter, lighting, norm, seed):
    torch.manual_seed(seed)
    expected = norm(lighting(x.clone() if jitter is None else jitter(x.clone())))
    after_expected = torch.rand(4)
    torch.manual_seed(seed)
    got = photometric.distort_(x.clone(), jitter, lighting, norm)
    assert torch.equal(torch.rand(4), after_expected)  # the same random draws, no more, no fewer
    return got, expected


@pytest.mark.parametrize("strength", [0.4, 1.0])  # 1.0: factors down to 0
def test_equals_colorjitter_lighting_and_normalize(strength):
    need_kernel()
    jitter = v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength)
    for x in images():
        for seed in range(24):  # every order of the three distortions comes up
            got, expected = both(x, jitter, Lighting(0.1), Normalize(MEAN, STD), seed)
            assert got.shape == expected.shape and got.dtype == torch.float32
            assert (got - expected).abs().max() <= 5e-6  # 1e-6 in pixels, divided by std ~0.22


def test_partial_jitter_no_lighting_and_no_jitter():
    need_kernel()
    x = next(images())
    for jitter in (v2.ColorJitter(brightness=0.3), v2.ColorJitter(contrast=0.5, saturation=0.2), None):
        for lighting in (Lighting(0.0), Lighting(0.1)):
            got, expected = both(x, jitter, lighting, Normalize(MEAN, STD), 3)
            assert (got - expected).abs().max() <= 1e-5


def test_training_s_preprocessing_is_fused_when_it_is_a_plain_normalize():
    """Training passes its preprocessing as a ModelNormalize; for RGB 0..1 pixels it is Normalize, fused."""
    need_kernel()
    pre = {"mean": list(MEAN), "std": list(STD), "channel_order": "RGB", "pixel_range": 1, "grayscale": False}
    x = next(images())
    mine = x.clone()
    torch.manual_seed(2)
    out = photometric.distort_(mine, v2.ColorJitter(0.4, 0.4, 0.4), Lighting(0.1), ModelNormalize(pre))
    assert out is mine  # normalised in place by the kernel, not by a PyTorch step after it
    got, expected = both(x, v2.ColorJitter(0.4, 0.4, 0.4), Lighting(0.1), ModelNormalize(pre), 2)
    assert (got - expected).abs().max() <= 5e-6


def test_a_tensor_that_needs_gradients_is_left_to_autograd():
    x = next(images()).requires_grad_()
    out = photometric.distort_(x, v2.ColorJitter(0.4, 0.4, 0.4), Lighting(0.1), Normalize(MEAN, STD))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_a_models_preprocessing_runs_after_the_kernel():
    need_kernel()
    caffe = {"pixel_range": 255, "channel_order": "BGR", "mean": [104.0, 117.0, 123.0], "std": [1.0, 1.0, 1.0]}
    x = next(images())
    got, expected = both(x, v2.ColorJitter(0.4, 0.4, 0.4), Lighting(0.1), ModelNormalize(caffe), 5)
    assert (got - expected).abs().max() <= 1e-3  # 255 x the pixel tolerance


def test_hue_jitter_and_a_switched_off_kernel_take_the_transforms_themselves(monkeypatch):
    x = next(images())
    got, expected = both(x, v2.ColorJitter(0.4, 0.4, 0.4, hue=0.1), Lighting(0.1), Normalize(MEAN, STD), 7)
    assert torch.equal(got, expected)
    monkeypatch.setattr(photometric._library, "state", {})
    monkeypatch.setenv("GOOGLENET_NATIVE_PHOTOMETRIC", "0")
    assert photometric.kernel() is None
    got, expected = both(x, v2.ColorJitter(0.4, 0.4, 0.4), Lighting(0.1), Normalize(MEAN, STD), 7)
    assert torch.equal(got, expected)
