"""The model family: shapes, gradients, the aux API, torchvision parity, scripting, Table 1 accounting."""

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision

import googlenet
from googlenet.cli import main as cli_main
from googlenet.summary import summarize

ARCHS = ["googlenet", "googlenet_bn", "googlenet_tv"]


def test_list_models():
    assert set(ARCHS) <= set(googlenet.list_models())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [224, 64, 160, 299])
def test_output_shapes(arch, size):
    torch.manual_seed(0)
    model = googlenet.create_model(arch, num_classes=7).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits = model(x)
        out = model(x, with_aux=True)
    assert logits.shape == (2, 7)
    assert isinstance(out, googlenet.GoogLeNetOutputs)
    assert out.logits.shape == out.aux1.shape == out.aux2.shape == (2, 7)
    torch.testing.assert_close(out.logits, logits)


@pytest.mark.parametrize("arch", ARCHS)
def test_same_return_type_in_train_and_eval(arch):
    model = googlenet.create_model(arch, num_classes=5)
    x = torch.randn(2, 3, 64, 64)
    for mode in (True, False):
        model.train(mode)
        assert isinstance(model(x), torch.Tensor)
        assert isinstance(model(x, with_aux=True), googlenet.GoogLeNetOutputs)


def test_aux_off():
    model = googlenet.create_model("googlenet", num_classes=3, aux_logits=False)
    out = model(torch.randn(1, 3, 64, 64), with_aux=True)
    assert out.aux1 is None and out.aux2 is None and out.logits.shape == (1, 3)
    assert not any(k.startswith("aux") for k in model.state_dict())


@pytest.mark.parametrize("arch", ARCHS)
def test_every_parameter_gets_a_gradient(arch):
    torch.manual_seed(0)
    model = googlenet.create_model(arch, num_classes=4).train()
    x, y = torch.randn(3, 3, 96, 96), torch.tensor([0, 1, 3])
    out = model(x, with_aux=True)
    loss = F.cross_entropy(out.logits, y) + 0.3 * (F.cross_entropy(out.aux1, y) + F.cross_entropy(out.aux2, y))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_paper_architecture_details():
    m = googlenet.create_model("googlenet")
    # True 5x5 branch, LRN in the stem, conv biases, ceil-mode pools, 3x3/2 pool before 5a, dropout 0.4.
    assert m.inception3a.branch3[1].conv.kernel_size == (5, 5)
    assert isinstance(m.lrn1, torch.nn.LocalResponseNorm) and isinstance(m.lrn2, torch.nn.LocalResponseNorm)
    assert (m.lrn1.size, m.lrn1.alpha, m.lrn1.beta, m.lrn1.k) == (5, 1e-4, 0.75, 1.0)
    assert all(c.bias is not None for c in m.modules() if isinstance(c, torch.nn.Conv2d))
    pools = [p for n, p in m.named_children() if n.startswith("maxpool")]
    assert [(p.kernel_size, p.stride, p.ceil_mode) for p in pools] == [(3, 2, True)] * 4
    assert m.dropout.p == 0.4 and m.aux1.dropout.p == 0.7
    # Caffe init: conv biases 0.2, aux FC 1024 bias 0.2, classifiers 0.
    assert torch.all(m.conv1.conv.bias == 0.2) and torch.all(m.aux1.fc1.bias == 0.2)
    assert torch.all(m.fc.bias == 0) and torch.all(m.aux2.fc2.bias == 0)
    bound = (3.0 / (3 * 7 * 7)) ** 0.5
    assert m.conv1.conv.weight.abs().max() <= bound


def test_paper_feature_map_geometry():
    m = googlenet.create_model("googlenet").eval()
    shapes = {}
    hooks = [getattr(m, n).register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
             for n in ("conv1", "maxpool1", "conv3", "maxpool2", "inception3b", "maxpool3", "inception4a",
                       "inception4e", "maxpool4", "inception5b")]
    with torch.no_grad():
        m(torch.zeros(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert shapes == {"conv1": (64, 112, 112), "maxpool1": (64, 56, 56), "conv3": (192, 56, 56),
                      "maxpool2": (192, 28, 28), "inception3b": (480, 28, 28), "maxpool3": (480, 14, 14),
                      "inception4a": (512, 14, 14), "inception4e": (832, 14, 14), "maxpool4": (832, 7, 7),
                      "inception5b": (1024, 7, 7)}


def test_bn_variant():
    m = googlenet.create_model("googlenet_bn")
    convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    bns = [c for c in m.modules() if isinstance(c, torch.nn.BatchNorm2d)]
    assert len(convs) == len(bns) and all(c.bias is None for c in convs)
    assert m.inception4e.branch3[1].conv.kernel_size == (5, 5)
    assert not any(isinstance(c, torch.nn.LocalResponseNorm) for c in m.modules())


def _randomized_torchvision(transform_input: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    tv = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True,
                                      transform_input=transform_input)
    with torch.no_grad():  # make BatchNorm statistics and affine parameters matter
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return tv.eval()


@pytest.mark.parametrize("transform_input", [False, True])
def test_torchvision_parity(transform_input):
    tv = _randomized_torchvision(transform_input)
    ours = googlenet.create_model("googlenet_tv", transform_input=transform_input)
    ours.load_state_dict(tv.state_dict(), strict=True)
    ours.eval()
    x = torch.randn(4, 3, 224, 224)
    with torch.no_grad():
        ref, got = tv(x), ours(x)
    assert (ref - got).abs().max().item() <= 1e-5
    # The aux heads match torchvision's too (torchvision returns them in train mode, aux2 before aux1).
    tv.train()
    ours.train()
    torch.manual_seed(1)
    ref_out = tv(x)
    torch.manual_seed(1)
    got_out = ours(x, with_aux=True)
    for a, b in ((ref_out.aux_logits1, got_out.aux1), (ref_out.aux_logits2, got_out.aux2)):
        assert (a - b).abs().max().item() <= 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_torchscript(arch):
    model = googlenet.create_model(arch, num_classes=6).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
        assert scripted(x, True)[1].shape == (2, 6)


def test_create_model_validation():
    with pytest.raises(ValueError, match="unknown arch"):
        googlenet.create_model("resnet50")
    with pytest.raises(ValueError, match="unknown option"):
        googlenet.create_model("googlenet", depth=3)
    with pytest.raises(ValueError, match="num_classes"):
        googlenet.create_model("googlenet", num_classes=0)
    with pytest.raises(ValueError, match="dropout"):
        googlenet.create_model("googlenet", dropout=1.5)
    m = googlenet.create_model("googlenet", dropout=0.1, aux_dropout=0.2)
    assert m.dropout.p == 0.1 and m.aux2.dropout.p == 0.2


def test_reset_classifier():
    m = googlenet.create_model("googlenet_bn", num_classes=1000)
    m.reset_classifier(3)
    out = m(torch.randn(1, 3, 64, 64), with_aux=True)
    assert out.logits.shape == out.aux1.shape == (1, 3) and m.num_classes == 3


# ---- Table 1 accounting, checked against an independent arithmetic of the filter counts ----

TABLE1 = {  # in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj, output H
    "inception_3a": (192, 64, 96, 128, 16, 32, 32, 28), "inception_3b": (256, 128, 128, 192, 32, 96, 64, 28),
    "inception_4a": (480, 192, 96, 208, 16, 48, 64, 14), "inception_4b": (512, 160, 112, 224, 24, 64, 64, 14),
    "inception_4c": (512, 128, 128, 256, 24, 64, 64, 14), "inception_4d": (512, 112, 144, 288, 32, 64, 64, 14),
    "inception_4e": (528, 256, 160, 320, 32, 128, 128, 14), "inception_5a": (832, 256, 160, 320, 32, 128, 128, 7),
    "inception_5b": (832, 384, 192, 384, 48, 128, 128, 7),
}


def _inception_arith(cin, c1, r3, c3, r5, c5, pp, k5=5):
    weights = cin * c1 + cin * r3 + r3 * 9 * c3 + cin * r5 + r5 * k5 * k5 * c5 + cin * pp
    per_pixel = weights  # every conv of the module runs at the module's resolution, stride 1
    return weights, per_pixel


@pytest.mark.parametrize("arch,k5", [("googlenet", 5), ("googlenet_tv", 3)])
def test_summary_matches_table1_arithmetic(arch, k5):
    s = summarize(arch, 224, 1000)
    rows = {r["name"]: r for r in s["rows"]}
    for name, (cin, c1, r3, c3, r5, c5, pp, hw) in TABLE1.items():
        weights, per_pixel = _inception_arith(cin, c1, r3, c3, r5, c5, pp, k5)
        assert rows[name]["weights"] == weights, name
        assert rows[name]["macs"] == per_pixel * hw * hw, name
        assert rows[name]["output"] == [c1 + c3 + c5 + pp, hw, hw], name
        assert rows[name]["widths"] == dict(zip(("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj"),
                                                (c1, r3, c3, r5, c5, pp)))
    assert rows["conv1"]["weights"] == 7 * 7 * 3 * 64 and rows["conv1"]["macs"] == 7 * 7 * 3 * 64 * 112 * 112
    assert rows["conv2"]["weights"] == 64 * 64 + 3 * 3 * 64 * 192
    assert rows["conv2"]["macs"] == (64 * 64 + 3 * 3 * 64 * 192) * 56 * 56
    assert rows["linear"]["weights"] == 1024 * 1000 and rows["linear"]["output"] == [1000, 1, 1]
    assert [rows[p]["output"] for p in ("pool1", "pool2", "pool3", "pool4")] == \
        [[64, 56, 56], [192, 28, 28], [480, 14, 14], [832, 7, 7]]
    model = googlenet.create_model(arch)
    total = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("aux"))
    assert s["total"]["params"] == total
    assert s["total"]["params_with_aux"] == sum(p.numel() for p in model.parameters())


def test_summary_flags_the_paper_inconsistencies():
    s = summarize("googlenet", 224, 1000)
    rows = {r["name"]: r for r in s["rows"]}
    # SPEC section 1: params of conv2, 3a, 3b, 4b and linear match; ops of every inception row but 5a match.
    params_ok = {n for n, r in rows.items() if r["params_match"]}
    ops_ok = {n for n, r in rows.items() if r["ops_match"]}
    assert params_ok == {"conv2", "inception_3a", "inception_3b", "inception_4b", "linear"}
    assert ops_ok == {"conv2", "linear"} | {n for n in TABLE1 if n != "inception_5a"}
    assert set(s["flagged"]) == {"conv1", "inception_4a", "inception_4c", "inception_4d", "inception_4e",
                                 "inception_5a", "inception_5b"}
    assert rows["inception_3a"]["paper_params"] == 159 * 1024 and rows["inception_3a"]["paper_ops"] == 128_000_000
    # The text's "1.5 billion multiply-adds".
    assert 1.5e9 <= s["total"]["macs"] <= 1.6e9


def test_torchvision_summary_params_match_published_count():
    # torchvision's googlenet: 6,624,904 parameters without the aux heads (SPEC section 5).
    assert summarize("googlenet_tv", 224, 1000)["total"]["params"] == 6_624_904


def test_summary_cli_json(capsys):
    assert cli_main(["summary", "--arch", "googlenet_bn", "--input-size", "160", "--num-classes", "10",
                     "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["arch"] == "googlenet_bn" and s["input_size"] == 160 and s["num_classes"] == 10
    rows = {r["name"]: r for r in s["rows"]}
    assert rows["inception_3a"]["output"] == [256, 20, 20] and rows["linear"]["output"] == [10, 1, 1]
    assert {"params", "macs", "params_with_aux"} <= set(s["total"])


def test_summary_cli_table_and_errors(capsys):
    assert cli_main(["summary"]) == 0
    out = capsys.readouterr().out
    assert "inception_4e" in out and "DIFFERS" in out and "1,582,671,872" in out
    with pytest.raises(SystemExit) as e:
        cli_main(["summary", "--input-size", "abc"])
    assert e.value.code == 2
    assert cli_main(["summary", "--arch", "nope"]) == 2
    assert cli_main(["summary", "--input-size", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("googlenet summary: error:") and "64" in err[-1]


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_autocast_forward_and_backward(arch):
    """bf16 is a switch for every arch: the paper's LRN has no bf16 CPU kernel, so it runs in fp32 inside."""
    torch.manual_seed(0)
    model = googlenet.create_model(arch, num_classes=5)
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 4])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, with_aux=True)
        loss = F.cross_entropy(out.logits.float(), y)
    loss.backward()
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    assert model.conv1.conv.weight.grad is not None
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x).float()
    with torch.no_grad():
        ref = model(x)
    assert (low - ref).abs().max().item() < 0.1 * ref.abs().max().item() + 1e-2
