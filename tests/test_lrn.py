"""The fast LRN against PyTorch's ``F.local_response_norm`` (the independent reference): forward and gradient for
both parameter sets the archs use, NCHW and channels_last, bf16 autocast, and its ONNX export as the native LRN op
run by ONNX Runtime."""

import pytest
import torch
import torch.nn.functional as F

from googlenet import native
from googlenet.models.lrn import local_response_norm
from tests.system_packages import missing

# (size, alpha, beta, k): Caffe's (the paper's googlenet) and TensorFlow's depth_radius 5, bias 2, alpha 1e-4,
# beta 0.5 in PyTorch's terms (inception5h).
PARAMS = [(5, 1e-4, 0.75, 1.0), (11, 11e-4, 0.5, 2.0), (3, 2e-3, 0.9, 0.5)]


@pytest.mark.parametrize("size,alpha,beta,k", PARAMS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_forward_and_gradient_equal_pytorch(size, alpha, beta, k, layout):
    g = torch.Generator().manual_seed(size)
    x = torch.randn(2, 24, 7, 9, generator=g, dtype=torch.float64) * 20  # large enough that the sum matters
    grad_out = torch.randn(x.shape, generator=g, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    ref_x = x.clone().requires_grad_()
    ref = F.local_response_norm(ref_x, size, alpha, beta, k)
    (ref_grad,) = torch.autograd.grad(ref, ref_x, grad_out)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        ours_x = x.to(dtype).requires_grad_()
        ours = local_response_norm(ours_x, size, alpha, beta, k)
        (ours_grad,) = torch.autograd.grad(ours, ours_x, grad_out.to(dtype))
        assert ours.dtype == dtype and ours.shape == x.shape
        rel = ((ours.double() - ref).abs() / ref.abs().clamp_min(1e-30)).max().item()
        assert rel < tol, (dtype, rel)
        grad_rel = ((ours_grad.double() - ref_grad).abs().max() / ref_grad.abs().max()).item()
        assert grad_rel < tol, (dtype, grad_rel)


def test_gradcheck_and_the_sum_is_really_across_channels():
    x = torch.randn(1, 9, 2, 3, dtype=torch.float64, requires_grad=True) * 10
    assert torch.autograd.gradcheck(lambda z: local_response_norm(z, 5, 0.5, 0.75, 1.0), (x.detach().requires_grad_(),))
    # A spike in channel 4 dims channels 2..6 only (window 5), nothing else.
    spike = torch.zeros(1, 9, 1, 1, dtype=torch.float64)
    spike[0, 4] = 100.0
    base = torch.ones(1, 9, 1, 1, dtype=torch.float64)
    y = local_response_norm(base + spike, 5, 1.0, 1.0, 1.0) * (base + spike)
    changed = (local_response_norm(base + spike, 5, 1.0, 1.0, 1.0) != local_response_norm(base, 5, 1.0, 1.0, 1.0))
    assert changed.view(-1).nonzero().view(-1).tolist() == [2, 3, 4, 5, 6]
    assert torch.isfinite(y).all()


def test_bf16_and_fp16_are_computed_in_fp32_and_returned_in_their_dtype():
    x = torch.randn(2, 16, 5, 5) * 300  # squares overflow fp16 (65504) if summed in fp16
    ref = F.local_response_norm(x, 5, 1e-4, 0.75, 1.0)
    for dtype in (torch.bfloat16, torch.float16):
        y = local_response_norm(x.to(dtype).requires_grad_(), 5, 1e-4, 0.75, 1.0)
        assert y.dtype == dtype and torch.isfinite(y.float()).all()
        assert (y.float() - ref).abs().max() <= 0.02 * ref.abs().max()
        y.float().sum().backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = local_response_norm(x.bfloat16(), 5, 1e-4, 0.75, 1.0)
    assert out.dtype == torch.bfloat16


def test_even_size_is_refused():
    with pytest.raises(ValueError, match="odd"):
        local_response_norm(torch.ones(1, 4, 2, 2), 4)


@pytest.mark.slow
def test_onnx_export_is_the_native_lrn_op_and_onnxruntime_agrees(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import googlenet
    from googlenet.export import export_onnx

    torch.manual_seed(0)
    model = googlenet.create_model("googlenet", num_classes=10, aux_logits=False).eval()
    path = export_onnx(model, tmp_path / "m.onnx", input_size=64)
    graph = onnx.load(str(path)).graph
    lrn = [n for n in graph.node if n.op_type == "LRN"]
    assert len(lrn) == 2
    attrs = {a.name: (a.f if a.type == onnx.AttributeProto.FLOAT else a.i) for a in lrn[0].attribute}
    assert attrs["size"] == 5 and attrs["alpha"] == pytest.approx(1e-4) and attrs["beta"] == pytest.approx(0.75)
    assert attrs["bias"] == pytest.approx(1.0)
    assert not any(n.op_type in ("AveragePool", "Pad") for n in graph.node)  # no decomposed LRN left
    x = torch.randn(3, 3, 64, 64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert abs(got - want).max() < 1e-4


def test_export_onnx_native_or_decomposed_lrn(tmp_path):
    # export writes the native op; the in-process ONNX Runtime sessions ask for the decomposition, which ORT's CPU
    # runs faster; both agree with PyTorch.
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from googlenet.export import export_onnx
    from googlenet.models import create_model

    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=3).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x).numpy()
    counts = {}
    for native in (True, False):
        path = export_onnx(model, tmp_path / f"{native}.onnx", input_size=64, native_lrn=native)
        counts[native] = sum(n.op_type == "LRN" for n in onnx.load(str(path)).graph.node)
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
        assert abs(got - ref).max() < 1e-4
    assert counts == {True: 2, False: 0}


def test_decomposed_export_keeps_every_shape_for_onnxruntimes_layout_pass(tmp_path):
    # The in-process sessions export a dynamic batch with the LRN decomposed. ONNX Runtime's NCHWc pass converts a
    # pool only when its input's channel count is known; an LRN written with squeeze(1) became an If node with no
    # output shape, and every pool after it ran in plain NCHW between reorders (the paper net 9% slower).
    onnx = pytest.importorskip("onnx")
    from googlenet.export import export_onnx
    from googlenet.models import create_model

    model = create_model("googlenet", num_classes=3).eval()
    path = export_onnx(model, tmp_path / "m.onnx", input_size=64, batch="dynamic", native_lrn=False)
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    assert not [n.op_type for n in graph.node if n.op_type in ("If", "Loop")]
    shapes = {v.name: v.type.tensor_type.shape for v in list(graph.value_info) + list(graph.input)}
    pools = [n for n in graph.node if n.op_type == "MaxPool"]
    assert len(pools) == 13  # 4 in the trunk, one in each of the 9 inception blocks
    for pool in pools:
        shape = shapes[pool.input[0]]
        assert len(shape.dim) == 4 and shape.dim[1].dim_value > 0, pool.name


@pytest.mark.parametrize("size,alpha,beta,k", PARAMS)
@pytest.mark.parametrize("shape", [(2, 24, 7, 9), (2, 24, 7)])
def test_onnx_decomposition_equals_pytorch_and_exports_no_pow_for_caffes_beta(size, alpha, beta, k, shape, tmp_path):
    from googlenet.models.lrn import _onnx_decomposition

    x = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 20
    ref = F.local_response_norm(x, size, alpha, beta, k)
    rel = ((_onnx_decomposition(x, size, alpha, beta, k) - ref).abs() / ref.abs().clamp_min(1e-30)).max().item()
    assert rel < 1e-12
    if beta == 0.75 and len(shape) == 4:
        onnx = pytest.importorskip("onnx")

        class Decomposed(torch.nn.Module):
            def forward(self, z):
                return _onnx_decomposition(z, size, alpha, beta, k)

        path = tmp_path / "lrn.onnx"
        torch.onnx.export(Decomposed(), (x.float(),), str(path), dynamo=False, opset_version=17)
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert "Pow" not in ops and {"Sqrt", "AveragePool"} <= ops


@pytest.fixture
def fresh_native(monkeypatch):
    """lrn_native with its loaded library forgotten (restored after), so a test can build it under other settings."""
    from googlenet.models import lrn_native

    monkeypatch.setattr(lrn_native._library, "state", {})
    return lrn_native


def need_c_kernel():
    """The fused LRN kernel's library. Without a C compiler: skipped locally, a failure under CI (.ci/run installs
    gcc through .ci/system-packages)."""
    from googlenet.models import lrn_native

    if lrn_native.kernel() is None:
        missing("the LRN kernel was not built: no C compiler", "gcc and libc6-dev")
    return lrn_native


@pytest.mark.parametrize("size,alpha,beta,k", PARAMS)
@pytest.mark.parametrize("threads", [1, 2])
def test_the_c_kernel_is_built_here_and_equals_pytorch(size, alpha, beta, k, threads):
    lrn_native = need_c_kernel()
    g = torch.Generator().manual_seed(size)
    # 3 x 7 x 11 = 231 pixels a sample: 693 pixels, split across 2 threads unevenly; 192 channels as in the net
    x = (torch.randn(3, 192, 7, 11, generator=g) * 20).contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(x.shape, generator=g)
    assert lrn_native.supports(x)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ours_x = x.clone().requires_grad_()
        ours = local_response_norm(ours_x, size, alpha, beta, k)
        (ours_grad,) = torch.autograd.grad(ours, ours_x, grad_out)
    finally:
        torch.set_num_threads(before)
    ref_x = x.double().requires_grad_()
    ref = F.local_response_norm(ref_x, size, alpha, beta, k)
    (ref_grad,) = torch.autograd.grad(ref, ref_x, grad_out.double())
    assert ours.is_contiguous(memory_format=torch.channels_last) and ours_grad.dtype == torch.float32
    assert ((ours.double() - ref).abs() / ref.abs().clamp_min(1e-30)).max() < 1e-6
    assert (ours_grad.double() - ref_grad).abs().max() / ref_grad.abs().max() < 1e-6


@pytest.mark.parametrize("size,channels", [(1, 8), (3, 1), (9, 3), (21, 4), (5, 2)])
def test_the_c_kernel_at_windows_as_wide_as_or_wider_than_the_channels(size, channels):
    need_c_kernel()
    g = torch.Generator().manual_seed(size)
    x = (torch.randn(3, channels, 5, 7, generator=g) * 20).contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(x.shape, generator=g)
    ours_x = x.clone().requires_grad_()
    ours = local_response_norm(ours_x, size, 2e-3, 0.75, 1.0)
    (ours_grad,) = torch.autograd.grad(ours, ours_x, grad_out)
    ref_x = x.double().requires_grad_()
    ref = F.local_response_norm(ref_x, size, 2e-3, 0.75, 1.0)
    (ref_grad,) = torch.autograd.grad(ref, ref_x, grad_out.double())
    assert ((ours.double() - ref).abs() / ref.abs().clamp_min(1e-30)).max() < 1e-6
    assert (ours_grad.double() - ref_grad).abs().max() / ref_grad.abs().max() < 1e-6


def test_the_c_kernel_takes_bf16_through_fp32_and_leaves_other_layouts_to_pytorch():
    lrn_native = need_c_kernel()

    x = (torch.randn(2, 16, 5, 5) * 300).contiguous(memory_format=torch.channels_last)
    assert lrn_native.supports(x) and not lrn_native.supports(x.contiguous()) and not lrn_native.supports(x.double())
    y = local_response_norm(x.bfloat16().requires_grad_(), 5, 1e-4, 0.75, 1.0)
    ref = F.local_response_norm(x, 5, 1e-4, 0.75, 1.0)
    assert y.dtype == torch.bfloat16 and (y.float() - ref).abs().max() <= 0.01 * ref.abs().max()
    empty = torch.zeros(0, 16, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    local_response_norm(empty, 5).sum().backward()
    assert empty.grad.shape == empty.shape


def test_without_a_compiler_or_switched_off_pytorchs_kernel_is_used(fresh_native, monkeypatch, tmp_path):
    x = (torch.randn(2, 8, 3, 3) * 10).contiguous(memory_format=torch.channels_last).requires_grad_()
    ref = F.local_response_norm(x, 5, 1e-4, 0.75, 1.0)
    monkeypatch.setenv("GOOGLENET_NATIVE_LRN", "0")
    assert fresh_native.kernel() is None and not fresh_native.supports(x)
    assert torch.allclose(local_response_norm(x, 5, 1e-4, 0.75, 1.0), ref, rtol=1e-6)
    monkeypatch.delenv("GOOGLENET_NATIVE_LRN")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert fresh_native.kernel() is None
    local_response_norm(x, 5, 1e-4, 0.75, 1.0).sum().backward()
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.so"))


def test_the_library_is_built_once_into_the_cache_and_reused(fresh_native, monkeypatch, tmp_path):
    need_c_kernel()
    fresh_native._library.state.clear()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert fresh_native.kernel() is not None
    built = list((tmp_path / "googlenet").glob("lrn-*.so"))
    assert len(built) == 1 and not list((tmp_path / "googlenet").glob("tmp*"))
    stamp = built[0].stat().st_mtime_ns
    fresh_native._library.state.clear()
    assert fresh_native.kernel() is not None and built[0].stat().st_mtime_ns == stamp


def test_a_cache_folder_others_can_write_to_is_not_used(fresh_native, monkeypatch, tmp_path):
    """A library another user could have put there would run as us: such a folder is passed over."""
    import tempfile

    need_c_kernel()
    fresh_native._library.state.clear()
    shared = tmp_path / "shared"
    (shared / "googlenet").mkdir(parents=True)
    (shared / "googlenet").chmod(0o777)
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert fresh_native.kernel() is not None
    assert not list((shared / "googlenet").iterdir())
    assert len(list((tmp_path / "tmp").glob("googlenet-*/lrn-*.so"))) == 1


@pytest.mark.parametrize("size", [0, -1, -3, 4, 1025, 2**32 + 5, 5.0, "5"])
def test_sizes_that_define_no_window_are_refused_on_both_paths(size):
    x = torch.randn(2, 8, 3, 3).contiguous(memory_format=torch.channels_last)
    for native in (True, False):
        with pytest.raises(ValueError, match=r"LRN size must be an odd integer from 1 to 1023 .*got"):
            local_response_norm(x, size, native=native)


def test_zero_channels_give_an_empty_output_and_double_backward_is_refused_on_both_paths():
    for layout in (torch.channels_last, torch.contiguous_format):
        empty = torch.zeros(2, 0, 3, 3).contiguous(memory_format=layout)
        assert local_response_norm(empty, 5).shape == (2, 0, 3, 3)
        x = torch.randn(2, 8, 3, 3).contiguous(memory_format=layout).requires_grad_()
        (g,) = torch.autograd.grad(local_response_norm(x, 5).sum(), x, create_graph=True)
        with pytest.raises(RuntimeError, match="does not require grad|no autograd formula"):  # PyTorch's | C's
            g.sum().backward()  # the written-out backward has no backward of its own: an error, not a wrong number


def test_a_damaged_cached_library_is_rebuilt_and_a_bad_cc_falls_back(fresh_native, monkeypatch, tmp_path):
    import subprocess
    import sys

    need_c_kernel()
    fresh_native._library.state.clear()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    # built by another process (this one must not have the file mapped while it is cut short)
    subprocess.run([sys.executable, "-c", "from googlenet.models import lrn_native; assert lrn_native.kernel()"],
                   check=True)
    (lib,) = (tmp_path / "googlenet").glob("lrn-*.so")
    whole = lib.read_bytes()
    lib.write_bytes(whole[: len(whole) // 2])  # as a crash mid-write would leave it: calling into it would SIGBUS
    assert fresh_native.kernel() is not None and native.intact(lib) and len(lib.read_bytes()) == len(whole)
    x = torch.randn(2, 8, 3, 3).contiguous(memory_format=torch.channels_last)
    assert torch.allclose(fresh_native.forward(x, 5, 1e-4, 0.75, 1.0), F.local_response_norm(x, 5), rtol=1e-6)
    fresh_native._library.state.clear()
    monkeypatch.setenv("CC", 'gcc "unclosed')
    assert fresh_native.kernel() is None and not fresh_native.supports(x)
