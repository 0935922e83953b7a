"""The fast LRN against PyTorch's ``F.local_response_norm`` (forward and gradient), and its ONNX export as the native
``LRN`` op run by ONNX Runtime (fp32 and int8)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from googlenet.models import create_model
from googlenet.models.lrn import LocalResponseNorm, local_response_norm, window_sum

# (size, alpha, beta, k): Caffe's bvlc_googlenet; inception5h's depth_radius 5 / bias 2 in PyTorch's terms; an even
# size and a general beta for the code paths those take.
PARAMS = [(5, 1e-4, 0.75, 1.0), (11, 11e-4, 0.5, 2.0), (4, 2e-4, 0.6, 1.5), (3, 1e-2, 1.0, 0.5)]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_and_gradient_match_pytorch(params, channels_last):
    g = torch.Generator().manual_seed(0)
    # Activations after ReLU span several scales; large ones make the sum of squares matter in the denominator.
    x = torch.randn(3, 24, 5, 7, generator=g).mul(20).relu() + torch.randn(3, 24, 5, 7, generator=g)
    x = x.double()  # reference in float64, so the comparison measures the fast path's fp32 error alone
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ref_in = x.clone().requires_grad_()
    ref = F.local_response_norm(ref_in, *params)
    grad_out = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    ref.backward(grad_out)

    fast_in = x.float().requires_grad_()
    out = local_response_norm(fast_in, *params)
    out.backward(grad_out.float())
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert _rel(out.double(), ref.detach()) < 1e-6
    assert _rel(fast_in.grad.double(), ref_in.grad) < 1e-6
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert fast_in.grad.is_contiguous(memory_format=torch.channels_last)


def test_gradcheck_float64():
    x = torch.randn(2, 7, 3, 3, dtype=torch.float64).mul(5).requires_grad_()
    from googlenet.models.lrn import _LRNFunction

    assert torch.autograd.gradcheck(lambda t: _LRNFunction.apply(t, 5, 1e-2, 0.75, 1.0), (x,))


def test_window_sum_window_and_edges():
    # size 4 in PyTorch's convention: two channels before, one after; clipped at both ends.
    t = torch.tensor([1.0, 10.0, 100.0, 1000.0, 10000.0]).view(1, 5, 1, 1)
    assert window_sum(t, 2, 1).flatten().tolist() == [11.0, 111.0, 1111.0, 11110.0, 11100.0]
    # a window wider than the channels sums them all
    assert window_sum(t[:, :2], 5, 5).flatten().tolist() == [11.0, 11.0]


def test_bf16_autocast_keeps_dtype_and_accuracy():
    x = torch.randn(2, 16, 4, 4).mul(10)
    m = LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x.bfloat16())
    assert out.dtype == torch.bfloat16
    ref = F.local_response_norm(x.bfloat16().float(), 5, 1e-4, 0.75, 1.0)
    assert _rel(out.float(), ref) < 8e-3  # bf16 output rounding only (8 bits of mantissa)


def test_model_uses_fast_lrn_and_scripts():
    m = create_model("googlenet", num_classes=5).eval()
    assert isinstance(m.lrn1, LocalResponseNorm) and isinstance(m.lrn1, torch.nn.LocalResponseNorm)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        scripted = torch.jit.script(m)
        assert torch.allclose(scripted(x), m(x), atol=1e-5, rtol=1e-4)


def _lrn_graph(params):
    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), LocalResponseNorm(*params),
                               torch.nn.Conv2d(16, 4, 1)).eval()


@pytest.mark.parametrize("params", PARAMS[:2])
def test_onnx_export_is_the_native_lrn_op(tmp_path, params):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _lrn_graph(params)
    x = torch.randn(2, 3, 8, 8)
    path = tmp_path / "lrn.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type == "LRN"]
    assert len(nodes) == 1
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs["size"] == params[0] and attrs["alpha"] == pytest.approx(params[1])
    assert attrs["beta"] == pytest.approx(params[2]) and attrs["bias"] == pytest.approx(params[3])
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_onnx_even_size_falls_back_to_exact_decomposition(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _lrn_graph((4, 2e-4, 0.6, 1.5))
    x = torch.randn(1, 3, 8, 8)
    path = tmp_path / "lrn.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    assert not any(n.op_type == "LRN" for n in onnx.load(str(path)).graph.node)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_paper_net_onnx_fp32_and_int8_run_native_lrn():
    pytest.importorskip("onnxruntime")
    from googlenet.inference import build_ort_session

    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=10).eval()
    x = torch.rand(16, 3, 64, 64)
    with torch.no_grad():
        ref = model(x).numpy()
    fp32 = build_ort_session(model, 64).run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(fp32, ref, rtol=1e-4, atol=1e-4)
    int8 = build_ort_session(model, 64, "int8", calibration=x).run(None, {"images": x.numpy()})[0]
    assert int8.shape == ref.shape and np.isfinite(int8).all()
    # Quantisation error stays a small fraction of the logits' spread (random weights: near-tied classes, so
    # top-1 agreement is not a meaningful check here).
    assert np.abs(int8 - ref).max() < 0.2 * (ref.max() - ref.min())


def test_export_onnx_native_or_decomposed_lrn(tmp_path):
    onnx = pytest.importorskip("onnx")
    from googlenet.export import export_onnx

    model = create_model("googlenet", num_classes=3).eval()
    counts = {}
    for native in (True, False):
        path = export_onnx(model, tmp_path / f"{native}.onnx", input_size=64, native_lrn=native)
        counts[native] = sum(n.op_type == "LRN" for n in onnx.load(str(path)).graph.node)
    assert counts == {True: 2, False: 0}


def test_bench_lrn_rows():
    from googlenet.bench.lrn import bench_lrn

    rows, notes = bench_lrn(batch_size=2, input_size=64, rounds=1)
    assert [r["name"] for r in rows][:2] == ["caffe LRN 64x16x16 F.local_response_norm", "caffe LRN 64x16x16 fast"]
    assert len(rows) == 8 and all(r["images_per_s"] > 0 for r in rows)
    fast = rows[1]
    assert set(fast["ratios"]) == {"caffe LRN 64x16x16 F.local_response_norm"} and fast["ratios"][
        "caffe LRN 64x16x16 F.local_response_norm"] > 0
