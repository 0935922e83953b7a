"""torchvision checkpoints -> googlenet_tv weights: parity with torchvision's own model, refusals, --weights
torchvision offline and from torch.hub's cache."""

import time

import pytest
import torch
import torchvision

import googlenet
from googlenet.cli import main
from googlenet.pretrained.torchvision_pth import load_torchvision_pretrained
from googlenet.data.imagenet import imagenet_classes
from tests.hostile import bare_hostile_pickle, hostile_pickle, peak_rss_growth

PARITY = 1e-5



def randomise_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights AND BatchNorm statistics, so that parity cannot hold by accident (fresh BN is identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


def torchvision_model(aux_logits: bool, seed: int = 0) -> torch.nn.Module:
    # Built the way torchvision's builder builds it for GoogLeNet_Weights.IMAGENET1K_V1.
    tv = torchvision.models.googlenet(weights=None, aux_logits=aux_logits, transform_input=True, init_weights=False)
    return randomise_(tv, seed)


@pytest.fixture(scope="module")
def tv_model():
    return torchvision_model(aux_logits=True)


def run_cli(capsys, *argv):
    """Runs ``googlenet ARGV`` in this process: (exit code, stdout, stderr). A bad flag exits through argparse."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("aux", [True, False], ids=["with-aux", "without-aux"])
def test_convert_matches_torchvision(tmp_path, capsys, tv_model, aux):
    state = tv_model.state_dict()
    reference = tv_model
    if not aux:  # a fine-tuned torchvision model without aux heads, saved by a training script
        state = {k: v for k, v in state.items() if not k.startswith("aux")}
        reference = torchvision_model(aux_logits=False)
        reference.load_state_dict(state)
        reference.eval()
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    torch.save(state, tmp_path / "tv.pth")

    code, out, err = run_cli(capsys, "convert", "--from", "torchvision", tmp_path / "tv.pth",
                             tmp_path / "w.safetensors")
    assert code == 0, err
    assert "6,624,904 parameters without aux" in out  # torchvision's published count for these weights

    ours = googlenet.load_model(tmp_path / "w.safetensors")
    assert ours.metadata["arch"] == "googlenet_tv" and ours.metadata["options"]["transform_input"] is True
    assert ours.aux_logits == aux
    assert ours.class_names == imagenet_classes() and ours.class_names[0] == "tench"
    assert ours.preprocessing == {"input_size": 224, "resize_size": 256, "interpolation": "bilinear",
                                  "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                  "channel_order": "RGB", "pixel_range": 1, "grayscale": False}
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = reference(x), ours(x)
    diff = (got - want).abs().max().item()
    print(f"convert parity (aux={aux}): max abs logit difference {diff:.2e} (logits up to {want.abs().max():.1f})")
    assert want.abs().max() > 1.0  # the randomised model gives non-trivial logits
    assert diff <= PARITY


def test_read_checkpoint_unwraps(tmp_path):
    from googlenet.pretrained.torchvision_pth import read_checkpoint

    state = {"fc.weight": torch.ones(2, 3), "fc.bias": torch.zeros(2)}
    for i, wrapped in enumerate([state, {"model": state}, {"model": {"state_dict": state}},
                                 {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 1}]):
        torch.save(wrapped, tmp_path / f"{i}.pth")
        got = read_checkpoint(tmp_path / f"{i}.pth")
        assert sorted(got) == ["fc.bias", "fc.weight"] and torch.equal(got["fc.weight"], state["fc.weight"])


def test_convert_refuses_hostile_and_wrong_checkpoints(tmp_path, capsys, tv_model):
    marker = tmp_path / "pwned"
    hostile = [bare_hostile_pickle(tmp_path / "bare.pth", marker), hostile_pickle(tmp_path / "zip.pth", marker)]
    state = tv_model.state_dict()
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet.pth")
    bad_shape = dict(state, **{"inception4a.branch1.conv.weight": torch.zeros(192, 480, 3, 3)})
    torch.save(bad_shape, tmp_path / "shape.pth")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    torch.save(state, tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 3])
    cases = {hostile[0]: "is not a plain state dict: it holds code or objects that torch.load(weights_only=True) "
                         "refuses (Unsupported",
             hostile[1]: "refuses (Unsupported global: GLOBAL io.open); nothing in it was run",
             tmp_path / "resnet.pth": "is not a torchvision GoogLeNet state dict",
             tmp_path / "shape.pth": "inception4a.branch1.conv.weight has shape (192, 480, 3, 3), expected "
                                     "(192, 480, 1, 1)",
             tmp_path / "tensor.pth": "does not hold a state dict",
             tmp_path / "truncated.pth": "is not a readable PyTorch checkpoint",
             tmp_path / "missing.pth": "checkpoint not found"}
    for src, message in cases.items():
        code, out, err = run_cli(capsys, "convert", "--from", "torchvision", src, tmp_path / "out.safetensors")
        assert code == 2 and message in err and err.count("\n") == 1, (src.name, err)
        assert not (tmp_path / "out.safetensors").exists()
    assert not marker.exists()


def test_checkpoints_declaring_data_they_do_not_hold_are_refused(tmp_path, capsys, tv_model):
    """A 2 KB pickle can declare a stride-0 expanded, meta or sparse tensor of millions of rows: refused from the
    file, before a model is built to its shape (one such file reached 9.5 GB before)."""
    state = tv_model.state_dict()
    cases = {
        "expanded.pth": ({"conv1.conv.weight": torch.zeros(1), "fc.weight": torch.zeros(1).expand(1_500_000, 1024)},
                         "fc.weight declares 1,536,000,000 values but the file holds 1"),
        "meta.pth": (dict(state, **{"fc.weight": torch.empty(10**9, 1024, device="meta")}), "not a plain dense tensor"),
        "sparse.pth": (dict(state, **{"fc.bias": torch.zeros(1000).to_sparse()}), "not a plain dense tensor"),
        "complex.pth": (dict(state, **{"fc.bias": torch.zeros(1000, dtype=torch.complex64)}), "not real numbers"),
        "narrow.pth": (dict(state, **{"fc.weight": torch.zeros(1_500_000, 1)}), "expected [classes, 1024]"),
        "zero.pth": (dict(state, **{"fc.weight": torch.zeros(0, 1024), "fc.bias": torch.zeros(0)}),
                     "expected [classes, 1024]"),
    }
    for name, (sd, message) in cases.items():
        torch.save(sd, tmp_path / name)
        with peak_rss_growth() as grown:  # the refusal alone, not the saving of the case
            code, out, err = run_cli(capsys, "convert", "--from", "torchvision", tmp_path / name,
                                     tmp_path / "o.safetensors")
        assert code == 2 and message in err and err.count("\n") == 1, (name, err)
        assert grown["kib"] < 500_000, (name, grown)  # KiB


def test_weights_torchvision_from_hub_cache(tmp_path, monkeypatch, tv_model):
    # torchvision's own file name in torch.hub's cache: what a connected machine leaves there after one download.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(tv_model.state_dict(), checkpoints / "googlenet-1378be20.pth")
    reference = torchvision_model(aux_logits=False)
    reference.load_state_dict({k: v for k, v in tv_model.state_dict().items() if not k.startswith("aux")})
    reference.eval()
    x = torch.randn(1, 3, 224, 224)
    for _ in range(2):  # the second call reads the converted file cached beside the .pth
        model = googlenet.pretrained.load_weights_arg("torchvision")
        assert not model.training and model.aux1 is None  # torchvision's builder drops the untrained aux heads
        assert model.metadata["arch"] == "googlenet_tv" and len(model.class_names) == 1000
        with torch.no_grad():
            assert (model(x) - reference(x)).abs().max().item() <= PARITY
    assert (checkpoints / "googlenet_tv-1378be20.safetensors").is_file()
    api = googlenet.create_model("googlenet_tv", weights="torchvision")  # the public call, the same resolver
    with torch.no_grad():
        assert (api(x) - reference(x)).abs().max().item() <= PARITY
    with pytest.raises(googlenet.UserError, match="hold arch googlenet_tv, not googlenet .it fills googlenet_tv.$"):
        googlenet.create_model("googlenet", weights="torchvision")


def test_weights_torchvision_offline_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache

    def offline(*args, **kwargs):  # what an offline machine answers; the test never touches the network
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr("socket.create_connection", offline)
    start = time.monotonic()
    code, out, err = run_cli(capsys, "export", "--weights", "torchvision", "--out", tmp_path / "m.onnx")
    assert time.monotonic() - start < 10
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("googlenet export: error: cannot fetch torchvision's GoogLeNet weights (")
    assert "download https://download.pytorch.org/models/googlenet-1378be20.pth" in err
    assert "run 'googlenet convert --from torchvision googlenet-1378be20.pth googlenet_tv.safetensors'" in err
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(googlenet.UserError, match="Network is unreachable"):
        load_torchvision_pretrained()


def test_weights_torchvision_unresolvable_host_does_not_hang(tmp_path, monkeypatch):
    # Name resolution can stall beyond any socket timeout; the probe gives up after `timeout` seconds.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def stall(*args, **kwargs):
        time.sleep(30)
        raise OSError("stalled")  # the probe thread outlives the test; it must end quietly

    monkeypatch.setattr("socket.create_connection", stall)
    start = time.monotonic()
    with pytest.raises(googlenet.UserError, match=r"no answer within 1 s\): on a connected machine download"):
        load_torchvision_pretrained(timeout=1.0)
    assert time.monotonic() - start < 5
