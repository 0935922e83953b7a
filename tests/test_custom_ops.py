"""The C kernels as custom ops: torch.library.opcheck on each, and torch.export and torch.compile(fullgraph=True) on
the three archs, NCHW and channels_last, eval and one training step, equal to eager; the paper net's LRN in
channels_last is the ``googlenet::lrn`` node of the graph, or PyTorch's ops where no C compiler exists.

The whole-net compiles use the aot_eager backend (the fake kernels and the registered gradient, without Inductor's
code generation), but for one: Inductor on the paper net in channels_last, eval (63 s with a cold Inductor cache on
a 2-core CPU, seconds with a warm one). A conv + LRN net is compiled with Inductor forward and backward."""

import copy

import pytest
import torch

from googlenet.data import photometric, resample
from googlenet.models import create_model, lrn_native
from googlenet.models.googlenet import LocalResponseNorm
from tests.system_packages import missing

ARCHS = ["googlenet", "googlenet_bn", "googlenet_tv"]
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
TOL = 1e-5


def need_kernels():
    if None in (lrn_native.kernel(), resample.kernel(), photometric.kernel()):
        missing("the C kernels were not built: no C compiler", "gcc and libc6-dev")


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Compiled code keeps the kernels' availability as a constant of its graph: each test compiles anew."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def no_compiler(monkeypatch, tmp_path):
    """The kernels' libraries forgotten and a compiler that does not exist: the PyTorch paths run."""
    for library in (lrn_native._library, resample._library, photometric._library):
        monkeypatch.setattr(library, "state", {})
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert lrn_native.kernel() is None and resample.kernel() is None and photometric.kernel() is None


def test_opcheck_every_op():
    need_kernels()
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 12, 3, 5, generator=g) * 20).contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.googlenet.lrn, (x.requires_grad_(), 5, 1e-4, 0.75, 1.0))
    grad = torch.randn(x.shape, generator=g).contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.googlenet.lrn_backward, (grad, x.detach(), 5, 1e-4, 0.75, 1.0))
    crop = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8, generator=g)
    for mode in ("bilinear", "area"):
        torch.library.opcheck(torch.ops.googlenet.resample_u8, (crop, 11, 13, mode))
    order, shift = torch.randperm(4, generator=g), torch.randn(3, generator=g) * 0.1
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    for args in ((1.2, 0.8, 1.1, shift, mean, std), (-1.0, -1.0, -1.0, None, None, None)):
        torch.library.opcheck(torch.ops.googlenet.photometric_, (torch.rand(3, 6, 7, generator=g), order, *args))


def _model(arch, layout):
    torch.manual_seed(0)
    return create_model(arch, num_classes=10, dropout=0.0, aux_dropout=0.0).to(memory_format=LAYOUTS[layout])


def _input(layout):
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)).contiguous(
        memory_format=LAYOUTS[layout])


def _step(model, x):
    """One training step's forward and backward (no optimizer: the gradients are what it computes)."""
    out = model(x, with_aux=True)
    sum(o.square().mean() for o in out).backward()
    return out, {name.removeprefix("_orig_mod."): p.grad for name, p in model.named_parameters()}


def _differ(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def _lrn_ops(ep) -> int:
    return sum(node.target is torch.ops.googlenet.lrn.default for node in ep.graph.nodes)


def check_export_and_compile(arch, layout):
    """Export and compile(fullgraph=True) of ``arch`` in eval and one training step equal eager; returns the number
    of ``googlenet::lrn`` nodes in the exported eval graph."""
    x = _input(layout)
    model = _model(arch, layout).eval()
    with torch.no_grad():
        ref = model(x)
        ep = torch.export.export(model, (x,))
        assert (ep.module()(x) - ref).abs().max() <= TOL
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        assert (compiled(x) - ref).abs().max() <= TOL

    model.train()
    ref_out, ref_grads = _step(copy.deepcopy(model), x)
    exported = torch.export.export(copy.deepcopy(model), (x,), {"with_aux": True}).module()
    for out, grads in (_step(exported, x),
                       _step(torch.compile(copy.deepcopy(model), fullgraph=True, backend="aot_eager"), x)):
        assert _differ(out, ref_out) <= TOL
        assert grads.keys() == ref_grads.keys() and _differ(grads.values(), ref_grads.values()) <= TOL
    return _lrn_ops(ep)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_export_and_compile_equal_eager(arch, layout):
    if arch == "googlenet" and layout == "channels_last":
        need_kernels()
    assert check_export_and_compile(arch, layout) == (2 if (arch, layout) == ("googlenet", "channels_last") else 0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_without_a_compiler_the_graph_holds_pytorchs_lrn(no_compiler, layout):
    assert check_export_and_compile("googlenet", layout) == 0


def test_a_graph_traced_with_the_kernel_says_so_if_it_is_switched_off(monkeypatch):
    need_kernels()
    x = torch.randn(2, 8, 3, 3).contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(LocalResponseNorm(5), fullgraph=True, backend="eager")
    compiled(x)
    monkeypatch.setenv("GOOGLENET_NATIVE_LRN", "0")
    with pytest.raises(RuntimeError, match="lrn_kernel.c: .* set GOOGLENET_NATIVE_LRN before compiling"):
        compiled(x)


class _ConvLRN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.lrn = torch.nn.Conv2d(3, 16, 3), LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)

    def forward(self, x):
        return self.lrn(self.conv(x)) * 10


@pytest.mark.parametrize("compiler", ["c", "none"])
def test_inductor_compiles_the_lrn_op_and_its_gradient(compiler, request):
    """Inductor (the default backend) with fullgraph=True on a conv + LRN in channels_last, forward and backward."""
    if compiler == "c":
        need_kernels()
    else:
        request.getfixturevalue("no_compiler")
    torch.manual_seed(0)
    model = _ConvLRN().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 12, 12).contiguous(memory_format=torch.channels_last)
    ref = model(x)
    ref.square().sum().backward()
    ref_grad = model.conv.weight.grad.clone()
    model.zero_grad()
    out = torch.compile(model, fullgraph=True)(x)
    out.square().sum().backward()
    assert (out - ref).abs().max() <= TOL and (model.conv.weight.grad - ref_grad).abs().max() <= TOL * 10


def test_inductor_compiles_the_paper_net_in_channels_last():
    """Inductor (the default backend), fullgraph=True, the paper net in channels_last, eval."""
    need_kernels()
    model, x = _model("googlenet", "channels_last").eval(), _input("channels_last")
    with torch.no_grad():
        assert (torch.compile(model, fullgraph=True)(x) - model(x)).abs().max() <= TOL


@pytest.mark.parametrize("compiler", ["c", "none"])
def test_the_data_kernels_compile_in_one_graph(compiler, request):
    if compiler == "c":
        need_kernels()
    else:
        request.getfixturevalue("no_compiler")
    crop = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    resize = torch.compile(resample.resize_u8, fullgraph=True, backend="aot_eager")
    for mode in ("bilinear", "bicubic"):
        assert torch.equal(resize(crop, (24, 20), mode), resample.resize_u8(crop, (24, 20), mode))

    if compiler == "c":  # the photometric op itself: distort_'s random draws are made outside it, in torchvision
        def distort(x, order, shift, mean, std):
            photometric.photometric_(x, order, 1.2, 0.8, 1.1, shift, mean, std)
            return x

        args = torch.randperm(4), torch.randn(3) * 0.1, torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.3, 0.4])
        x = torch.rand(3, 9, 11)
        compiled = torch.compile(distort, fullgraph=True, backend="aot_eager")
        assert torch.equal(compiled(x.clone(), *args), distort(x.clone(), *args))
