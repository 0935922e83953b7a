"""The data path's C resampler (googlenet.data.resample) against F.interpolate, the definition it claims to compute:
every interpolation of the paper recipe, planar and interleaved crops, sizes from 1 pixel to long strips."""

import pytest
import torch
import torch.nn.functional as F

from googlenet.data import resample
from googlenet.data.transforms import INTERPOLATIONS, interpolate_options, resize
from tests.system_packages import missing

SHAPES = [(300, 400, 224, 224), (120, 150, 224, 224), (1, 1, 224, 224), (5, 7, 3, 2), (1, 500, 64, 64),
          (37, 3000, 224, 13), (224, 224, 224, 224), (999, 17, 32, 48), (448, 896, 224, 224)]


def need_kernel():
    if resample.kernel() is None:
        missing("the resample kernel was not built: no C compiler", "gcc and libc6-dev")


def reference(crop, size, mode):
    return resize(crop.float().div(255), size, mode).clamp(0, 1)


def layouts(crop):
    """The same pixels as a planar tensor, as a view of an interleaved (HWC) decode, and as a crop of a larger
    image (row stride wider than the crop)."""
    c, h, w = crop.shape
    interleaved = crop.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    big = torch.zeros(c, h + 3, w + 5, dtype=torch.uint8)
    big[:, 2:2 + h, 1:1 + w] = crop
    return {"planar": crop, "interleaved": interleaved, "inside a larger image": big[:, 2:2 + h, 1:1 + w]}


@pytest.mark.parametrize("mode", INTERPOLATIONS)
@pytest.mark.parametrize("h,w,oh,ow", SHAPES)
def test_equals_f_interpolate_for_every_mode_layout_and_size(mode, h, w, oh, ow):
    need_kernel()
    crop = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(h * w))
    expected = reference(crop, (oh, ow), mode)
    for name, view in layouts(crop).items():
        got = resample.resize_u8(view, (oh, ow), mode)
        assert got.shape == (3, oh, ow) and got.dtype == torch.float32 and got.is_contiguous(), name
        assert (got - expected).abs().max() <= 2e-6, name
        assert got.min() >= 0 and got.max() <= 1


@pytest.mark.parametrize("mode", INTERPOLATIONS)
@pytest.mark.parametrize("n_in,n_out", [(1, 224), (2, 3), (223, 224), (225, 224), (500, 224), (4000, 224),
                                        (224, 7), (17, 1)])
def test_the_taps_are_f_interpolates_own_weights(mode, n_in, n_out):
    """Dense weights from the taps against F.interpolate applied to an identity: the impulse response of every
    input, the definition of the weights."""
    need_kernel()
    t = resample.taps(n_in, n_out, mode)
    dense = torch.zeros(n_out, n_in)
    for i in range(n_out):
        start, count = int(t.start[i]), int(t.count[i])
        assert 0 <= start and start + count <= n_in and count <= t.width
        dense[i, start:start + count] = t.weights[i, :count]
        assert (t.weights[i, count:] == 0).all()
    eye = torch.eye(n_in).view(n_in, 1, 1, n_in)
    expected = F.interpolate(eye, size=(1, n_out), mode=mode, **interpolate_options(mode))[:, 0, 0, :].T
    assert (dense - expected).abs().max() <= 1e-6


def test_grey_and_single_channel_crops():
    need_kernel()
    grey = torch.randint(0, 256, (1, 50, 60), dtype=torch.uint8)
    for crop in (grey, grey.expand(3, -1, -1)):  # a grey decode broadcast to RGB: channel stride 0
        for mode in INTERPOLATIONS:
            got = resample.resize_u8(crop, (31, 29), mode)
            assert got.shape == (crop.shape[0], 31, 29)
            assert (got - reference(crop, (31, 29), mode)).abs().max() <= 2e-6


def test_layouts_and_inputs_the_kernel_does_not_take_get_pytorchs_answer(monkeypatch):
    crop = torch.randint(0, 256, (3, 40, 90), dtype=torch.uint8)
    strided = crop[:, :, ::2]  # every other column: a layout the kernel refuses
    assert not resample._layout_ok(strided)
    assert torch.equal(resample.resize_u8(strided, (16, 16), "bicubic"), reference(strided, (16, 16), "bicubic"))
    floats = crop.float()
    with pytest.raises(TypeError, match="uint8"):
        resample.resize_u8(floats, (16, 16), "area")
    assert torch.equal(floats, crop.float())  # the caller's tensor is left as it was
    empty = torch.zeros(3, 0, 5, dtype=torch.uint8)
    with pytest.raises(RuntimeError):  # F.interpolate's own error for an empty input
        resample.resize_u8(empty, (4, 4), "bilinear")
    monkeypatch.setattr(resample, "MAX_SIDE", 64)
    assert torch.equal(resample.resize_u8(crop, (16, 16), "bilinear"), reference(crop, (16, 16), "bilinear"))


def test_switched_off_pytorchs_path_runs(monkeypatch):
    monkeypatch.setattr(resample._library, "state", {})
    monkeypatch.setenv("GOOGLENET_NATIVE_RESAMPLE", "0")
    assert resample.kernel() is None
    crop = torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8)
    assert torch.equal(resample.resize_u8(crop, (16, 16), "bicubic"), reference(crop, (16, 16), "bicubic"))


def test_large_shrink_factors_are_at_least_as_close_to_exact_arithmetic_as_pytorchs_float_path():
    """At large shrink factors both sum many float terms, in different orders: judged against float64."""
    need_kernel()
    ramp = (torch.linspace(0, 1, 2000)[:, None] * torch.linspace(0, 1, 1500) * 255).round().to(torch.uint8)
    crop = ramp.expand(3, -1, -1).contiguous()
    for mode in ("area", "bilinear", "bicubic"):
        exact = resize(crop.double() / 255, (64, 64), mode).clamp(0, 1)
        ours = (resample.resize_u8(crop, (64, 64), mode).double() - exact).abs().max()
        pytorch = (reference(crop, (64, 64), mode).double() - exact).abs().max()
        assert ours <= pytorch + 1e-6, mode


def test_shrink_factors_past_the_limit_take_pytorchs_path():
    crop = torch.randint(0, 256, (3, 2000, 10), dtype=torch.uint8)
    assert 2000 / 1 > resample.MAX_SHRINK
    assert torch.equal(resample.resize_u8(crop, (1, 10), "bilinear"), reference(crop, (1, 10), "bilinear"))


def test_threads_that_end_give_their_scratch_back():
    """Each thread's scratch buffer is freed when the thread ends (a thread pool calling the kernel must not grow
    by a buffer per thread it ever ran). Measured as resident memory now, not the peak: in a long test run the peak
    may already be far above what this test adds."""
    import threading

    need_kernel()
    crop = torch.randint(0, 256, (1000, 1000, 3), dtype=torch.uint8).permute(2, 0, 1)  # 2.7 MB of scratch a call

    def run():
        resample.resize_u8(crop, (224, 224), "area")

    def resident_mib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

    run()
    before = resident_mib()
    for _ in range(100):
        t = threading.Thread(target=run)
        t.start()
        t.join()
    grown_mib = resident_mib() - before
    assert grown_mib < 100, f"resident memory grew by {grown_mib:.0f} MiB over 100 threads"
