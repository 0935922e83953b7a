"""The photometric kernel (googlenet.data.photometric) against the transforms it stands for: torchvision's
ColorJitter, then AlexNet's PCA lighting and the normalisation written out here in numpy (not the project's
Lighting and Normalize): the same draws, the same numbers to float rounding."""

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from googlenet.data import photometric
from googlenet.data.transforms import Lighting, ModelNormalize, Normalize
from tests.system_packages import missing

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Krizhevsky et al. 2012, section 4.1: the eigenvalues and eigenvectors (columns p1, p2, p3) of the 3x3 covariance
# of ImageNet's RGB pixels in 0..1, as fb.resnet.torch publishes them. Each image gets [p1 p2 p3] [a1 l1, a2 l2,
# a3 l3]^T added to every pixel, a_i ~ N(0, std) drawn once per image.
EIGVAL = np.array([0.2175, 0.0188, 0.0045])
EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                   [-0.5808, -0.0045, -0.8140],
                   [-0.5836, -0.6948, 0.4203]])


def pca_lighting(x, std):
    """AlexNet's lighting noise on a 3 x H x W RGB tensor, in float64 numpy. Its three normal draws are torch's
    (``torch.randn(3)``, none when std is 0), so that both sides see the same alphas."""
    if std <= 0:
        return x
    alpha = torch.randn(3).double().numpy() * std
    rgb = sum(alpha[i] * EIGVAL[i] * EIGVEC[:, i] for i in range(3))  # the eigenvectors' weighted sum
    return torch.from_numpy(x.double().numpy() + rgb.reshape(3, 1, 1))


def normalised(x, mean, std, *, scale=1.0, bgr=False):
    """(x * scale, channels reversed for BGR, - mean) / std, in numpy."""
    a = x.double().numpy() * scale
    if bgr:
        a = a[::-1]
    return torch.from_numpy((a - np.reshape(mean, (3, 1, 1))) / np.reshape(std, (3, 1, 1)))


def need_kernel():
    if photometric.kernel() is None:
        missing("the photometric kernel was not built: no C compiler", "gcc and libc6-dev")


def images():
    g = torch.Generator().manual_seed(0)
    yield torch.rand(3, 37, 53, generator=g)
    yield torch.rand(3, 224, 224, generator=g).pow(4)  # mostly dark: brightness and contrast clamp at 0 and 1
    yield torch.full((3, 8, 8), 0.5)  # flat: contrast's mean is the image
    yield (torch.rand(3, 64, 64, generator=g) > 0.5).float()  # only 0 and 1


RGB = {"mean": list(MEAN), "std": list(STD)}
CAFFE = {"pixel_range": 255, "channel_order": "BGR", "mean": [104.0, 117.0, 123.0], "std": [1.0, 1.0, 1.0]}


def both(x, jitter, lighting_std, norm, seed, pre=RGB):
    """(the project's distort_ with Lighting(lighting_std) and ``norm``, the reference with pre's normalisation)."""
    torch.manual_seed(seed)
    lit = pca_lighting(x.clone() if jitter is None else jitter(x.clone()), lighting_std)
    expected = normalised(lit, pre["mean"], pre["std"], scale=pre.get("pixel_range", 1),
                          bgr=pre.get("channel_order") == "BGR").float()
    after_expected = torch.rand(4)
    torch.manual_seed(seed)
    got = photometric.distort_(x.clone(), jitter, Lighting(lighting_std), norm)
    assert torch.equal(torch.rand(4), after_expected)  # the same random draws, no more, no fewer
    return got, expected


def test_lighting_is_alexnet_s_pca_noise():
    """The project's Lighting on its own against the formula: a transposed eigenvector matrix, eigenvalues applied
    to the wrong axis or a std not applied all move the shift."""
    x = next(images())
    for seed in range(5):
        torch.manual_seed(seed)
        got = Lighting(0.1)(x.clone())
        torch.manual_seed(seed)
        expected = pca_lighting(x.clone(), 0.1).float()
        assert (got - expected).abs().max() <= 1e-6
        assert (got - x).abs().max() > 1e-3  # the draw did move the pixels
    assert torch.equal(Lighting(0.0)(x), x)


@pytest.mark.parametrize("strength", [0.4, 1.0])  # 1.0: factors down to 0
def test_equals_colorjitter_lighting_and_normalize(strength):
    need_kernel()
    jitter = v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength)
    for x in images():
        for seed in range(24):  # every order of the three distortions comes up
            got, expected = both(x, jitter, 0.1, Normalize(MEAN, STD), seed)
            assert got.shape == expected.shape and got.dtype == torch.float32
            assert (got - expected).abs().max() <= 5e-6  # 1e-6 in pixels, divided by std ~0.22


def test_partial_jitter_no_lighting_and_no_jitter():
    need_kernel()
    x = next(images())
    for jitter in (v2.ColorJitter(brightness=0.3), v2.ColorJitter(contrast=0.5, saturation=0.2), None):
        for lighting in (0.0, 0.1):
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
    got, expected = both(x, v2.ColorJitter(0.4, 0.4, 0.4), 0.1, ModelNormalize(pre), 2)
    assert (got - expected).abs().max() <= 5e-6


def test_a_tensor_that_needs_gradients_is_left_to_autograd():
    x = next(images()).requires_grad_()
    out = photometric.distort_(x, v2.ColorJitter(0.4, 0.4, 0.4), Lighting(0.1), Normalize(MEAN, STD))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_a_models_preprocessing_runs_after_the_kernel():
    need_kernel()
    x = next(images())
    got, expected = both(x, v2.ColorJitter(0.4, 0.4, 0.4), 0.1, ModelNormalize(CAFFE), 5, CAFFE)
    assert (got - expected).abs().max() <= 1e-3  # 255 x the pixel tolerance


def test_hue_jitter_and_a_switched_off_kernel_take_the_transforms_themselves(monkeypatch):
    x = next(images())
    got, expected = both(x, v2.ColorJitter(0.4, 0.4, 0.4, hue=0.1), 0.1, Normalize(MEAN, STD), 7)
    assert (got - expected).abs().max() <= 5e-6
    monkeypatch.setattr(photometric._library, "state", {})
    monkeypatch.setenv("GOOGLENET_NATIVE_PHOTOMETRIC", "0")
    assert photometric.kernel() is None
    got, expected = both(x, v2.ColorJitter(0.4, 0.4, 0.4), 0.1, Normalize(MEAN, STD), 7)
    assert (got - expected).abs().max() <= 5e-6
