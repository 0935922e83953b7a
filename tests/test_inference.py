"""The fast inference paths against plain eager fp32: BN folding is exact, every backend/precision pair returns
fp32 logits of the right shape that agree with fp32 (ORT fp32 within 1e-4; bf16 / int8 by top-1 and cosine)."""

import pytest
import torch
import torch.nn.functional as F

from googlenet.errors import UserError
from googlenet.inference import PRECISIONS, SUPPORTED, fold_batchnorm, optimize_for_inference
from googlenet.models import create_model

SIZE = 64  # the smallest input the network takes: keeps export, quantisation and runs to a few seconds




def _model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=10)
    # Non-trivial BN statistics and affine terms, as a trained model has (fresh ones make folding a no-op).
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def _images(n: int = 16, seed: int = 1) -> torch.Tensor:
    # Smooth images (upsampled noise), closer to photographs than white noise, normalised to ~unit variance.
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.randn(n, 3, 8, 8, generator=g), size=SIZE, mode="bilinear", align_corners=False) * 2


@pytest.fixture(scope="module")
def tv_model():
    return _model("googlenet_tv")


@pytest.fixture(scope="module")
def reference(tv_model):
    with torch.no_grad():
        return tv_model(_images())


@pytest.mark.parametrize("arch", ["googlenet_bn", "googlenet_tv", "googlenet"])
def test_fold_batchnorm_is_exact_and_removes_every_bn(arch):
    model = _model(arch)
    folded = fold_batchnorm(model)
    x = _images(4)
    with torch.no_grad():
        want, got = model(x), folded(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())
    # The model handed in is not modified.
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == (arch != "googlenet")


@pytest.mark.parametrize("channels_last", [True, False])
def test_eager_fp32_matches_plain_model(tv_model, reference, channels_last):
    predictor = optimize_for_inference(tv_model, precision="fp32", backend="eager", channels_last=channels_last)
    got = predictor(_images())
    assert got.dtype == torch.float32 and got.shape == (16, 10)
    assert (got - reference).abs().max().item() < 1e-4


def _agree(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float]:
    top1 = (got.argmax(1) == want.argmax(1)).float().mean().item()
    cosine = F.cosine_similarity(got - got.mean(1, keepdim=True), want - want.mean(1, keepdim=True)).min().item()
    return top1, cosine


def test_eager_bf16_agrees_with_fp32(tv_model, reference):
    got = optimize_for_inference(tv_model, precision="bf16", backend="eager")(_images())
    assert got.dtype == torch.float32 and got.shape == (16, 10)
    top1, cosine = _agree(got, reference)
    assert top1 >= 0.8 and cosine > 0.98, (top1, cosine)


@pytest.mark.slow
def test_onnxruntime_fp32_within_1e4_and_int8_agrees(tv_model, reference):
    pytest.importorskip("onnxruntime")
    x = _images()
    fp32 = optimize_for_inference(tv_model, precision="fp32", backend="onnxruntime")
    got = fp32(x)
    assert got.dtype == torch.float32 and got.shape == (16, 10)
    assert (got - reference).abs().max().item() < 1e-4
    assert fp32(x[:1]).shape == (1, 10)  # dynamic batch: the same session serves batch 1
    int8 = optimize_for_inference(tv_model, precision="int8", backend="onnxruntime", calibration=x)
    got8 = int8(x)
    assert got8.dtype == torch.float32 and got8.shape == (16, 10)
    top1, cosine = _agree(got8, reference)
    assert top1 >= 0.8 and cosine > 0.95, (top1, cosine)


@pytest.mark.parametrize("backend,precision", [("eager", "int8"), ("onnxruntime", "bf16"), ("compile", "int8")])
def test_unsupported_pairs_are_one_line_errors(tv_model, backend, precision):
    assert (backend, precision) not in SUPPORTED
    with pytest.raises(UserError, match=r"^[^\n]+$"):
        optimize_for_inference(tv_model, precision=precision, backend=backend)


def test_unknown_precision_and_backend_are_refused(tv_model):
    with pytest.raises(UserError, match="--precision must be one of fp32, bf16, int8, got 'fp8'"):
        optimize_for_inference(tv_model, precision="fp8")
    with pytest.raises(UserError, match="--backend must be one of eager, compile, onnxruntime, got 'tvm'"):
        optimize_for_inference(tv_model, backend="tvm")
    assert PRECISIONS == ("fp32", "bf16", "int8")


@pytest.mark.parametrize("arch", ["googlenet", "googlenet_bn"])
def test_bf16_runs_for_the_other_archs(arch):
    """The paper's net has LRN (no bf16 CPU kernel in PyTorch): bf16 must still run and agree with fp32."""
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10).eval()
    x = _images()
    with torch.no_grad():
        want = model(x)
    got = optimize_for_inference(model, precision="bf16", backend="eager")(x)
    assert got.dtype == torch.float32 and got.shape == want.shape
    top1, cosine = _agree(got, want)
    assert cosine > 0.98, (top1, cosine)


def test_int8_leaves_the_lrn_window_pool_in_fp32(tmp_path):
    # ONNX Runtime's QLinearAveragePool of the decomposed LRN's channel window was slower than the rest of the int8
    # net; quantize_int8 keeps that pool (and so the LRN's window and power) in fp32 and quantises the convolutions.
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from googlenet.export import export_onnx
    from googlenet.inference import quantize_int8

    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=3).eval()
    path = export_onnx(model, tmp_path / "m.onnx", input_size=64, batch="dynamic", native_lrn=False)
    out = quantize_int8(str(path), _images()[:, :, :64, :64], str(tmp_path / "m.int8.onnx"))
    graph = onnx.load(out).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    used_by = {}
    for n in graph.node:
        for i in n.input:
            used_by.setdefault(i, []).append(n.op_type)
    # ONNX Runtime makes a node int8 when it sits between a DequantizeLinear and a QuantizeLinear
    pools = [n for n in graph.node if n.op_type == "AveragePool"]
    assert len(pools) == 2  # the two LRN sites
    assert all("QuantizeLinear" not in used_by[p.output[0]] for p in pools)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 57 and all(made_by.get(c.input[0]) == "DequantizeLinear" for c in convs)
    assert all("QuantizeLinear" in used_by[c.output[0]] for c in convs)
