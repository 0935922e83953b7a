"""Fine-tuning: --init from a torchvision-layout checkpoint, another class count, overlapping class names (rows
checked numerically); --freeze (frozen tensors and BatchNorm statistics unchanged by training); head lr groups;
hostile --init/--freeze inputs end in one line, exit 2."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
import torchvision

from googlenet import finetune
from googlenet.cli import main
from googlenet.models import create_model
from googlenet.train.config import resolve
from googlenet.train.loop import make_optimizer
from googlenet.weights import load_model, save_model

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
TINY = ["--epochs", "1", "--max-train-images", "32", "--max-eval-images", "16", "--batch-size", "16",
        "--input-size", "64", "--json"]


def run_cli(args, capsys):
    code = main(["train", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_init_from_torchvision_layout_checkpoint_copies_every_trunk_tensor(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True, num_classes=1000)
    path = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), path)
    assert finetune.init_arch(str(path)) == "googlenet_tv"
    source = finetune.load_init(str(path))
    model = finetune.build_from(source, "googlenet_tv", 3, spec=str(path))
    assert model.transform_input  # torchvision's input remapping travels with its weights
    info = finetune.apply_init(model, source, ["a", "b", "c"], spec=str(path))
    ref = tv.state_dict()
    for k, v in model.state_dict().items():
        if not k.startswith(finetune.HEAD_PREFIXES) or k.split(".")[1] in ("conv", "fc1"):
            assert torch.equal(v, ref[k]), k
    assert model.fc.weight.shape == (3, 1024) and info["heads_replaced"] and info["carried_classes"] == 0


def _project_weights(tmp_path, names, arch="googlenet"):
    torch.manual_seed(1)
    src = create_model(arch, num_classes=len(names), aux_logits=True)
    path = tmp_path / f"{arch}-{len(names)}.safetensors"
    save_model(src, path, class_names=names)
    return src, path


def test_init_other_class_count_and_overlapping_names_carry_those_rows(tmp_path):
    src, path = _project_weights(tmp_path, FASHION)
    targets = ["Bag", "new-1", "Trouser", "new-2"]  # two names shared, in another order
    model = create_model("googlenet", num_classes=4, aux_logits=True)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    info = finetune.apply_init(model, load_model(path), targets, spec=str(path))
    assert info["carried_classes"] == 2 and info["heads_replaced"]
    for key in finetune.CLASS_ROW_KEYS:
        got, ref = model.state_dict()[key], src.state_dict()[key]
        torch.testing.assert_close(got[0], ref[FASHION.index("Bag")], rtol=0, atol=0)
        torch.testing.assert_close(got[2], ref[FASHION.index("Trouser")], rtol=0, atol=0)
        torch.testing.assert_close(got[1], fresh[key][1], rtol=0, atol=0)  # new classes keep the fresh init
        torch.testing.assert_close(got[3], fresh[key][3], rtol=0, atol=0)
    assert torch.equal(model.inception5b.branch4[1].conv.weight, src.inception5b.branch4[1].conv.weight)
    assert torch.equal(model.aux2.fc1.weight, src.aux2.fc1.weight)


def test_freeze_trunk_keeps_trunk_and_batchnorm_statistics(tmp_path):
    model = create_model("googlenet_bn", num_classes=3, aux_logits=True)
    frozen = finetune.freeze(model, "trunk")
    assert frozen and all(not k.startswith("fc.") for k in frozen)
    assert {k for k, p in model.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}  # a linear probe
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = resolve("finetune", None, {"arch": "googlenet_bn", "freeze": "trunk"})
    opt = make_optimizer(cfg, model, 1e-2)
    assert {g["lr_mult"] for g in opt.param_groups} == {10.0}  # fc alone, at the head rate
    model.train()
    finetune.keep_frozen_in_eval(model)
    out = model(torch.randn(4, 3, 64, 64), with_aux=True)
    (out.logits.sum() + out.aux1.sum()).backward()
    assert model.aux1.fc2.weight.grad is None
    opt.step()
    after = model.state_dict()
    for k in before:
        if not k.startswith(finetune.HEAD_PREFIXES):
            assert torch.equal(before[k], after[k]), k  # weights and BN running stats alike
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert model.conv1.conv.weight.grad is None  # no autograd through the frozen trunk


def test_freeze_layer_is_a_prefix_in_forward_order():
    model = create_model("googlenet", num_classes=3)
    frozen = finetune.freeze(model, "inception4a")
    assert "conv1.conv.weight" in frozen and any(k.startswith("inception4a.") for k in frozen)
    assert not any(k.startswith(("inception4b.", "fc.", "aux")) for k in frozen)
    assert model.inception4b.branch1.conv.weight.requires_grad


@pytest.mark.slow
def test_train_init_records_source_and_keeps_rows(tmp_path, capsys):
    # Through the training loop (not an optimizer stepped by hand): a linear probe on the BN net trains fc and
    # nothing else, BatchNorm running statistics included.
    _, path = _project_weights(tmp_path, FASHION, arch="googlenet_bn")
    code, out, err = run_cli([*TINY, "--init", str(path), "--freeze", "trunk", "--out",
                              str(tmp_path / "run")], capsys)
    assert code == 0, err
    model = load_model(json.loads(out.strip().splitlines()[-1])["weights"])
    init = model.metadata["training"]["init"]
    assert init["source"] == str(path) and init["carried_classes"] == 10 and not init["heads_replaced"]
    assert model.metadata["training"]["freeze"] == "trunk"
    # No --recipe: the finetune recipe, said on stderr and recorded (from-scratch settings would waste the weights).
    assert "train: --init without --recipe: using the finetune recipe" in err
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["recipe"] == "finetune"
    src, got = load_model(path).state_dict(), model.state_dict()
    assert got.keys() == src.keys()
    trunk = [k for k in src if not k.startswith(finetune.HEAD_PREFIXES)]
    assert any("running_mean" in k for k in trunk)
    assert [k for k in trunk if not torch.equal(got[k], src[k])] == []
    assert not torch.equal(got["fc.weight"], src["fc.weight"]) and not torch.equal(got["fc.bias"], src["fc.bias"])


@pytest.mark.slow
@pytest.mark.parametrize("case", ["other_arch", "truncated", "pickle", "bad_layer"])
def test_hostile_init_and_freeze_one_line_exit_2(tmp_path, capsys, case):
    _, good = _project_weights(tmp_path, FASHION)
    args = ["--init", str(good)]
    if case == "other_arch":
        args += ["--arch", "googlenet_bn"]
    elif case == "truncated":
        bad = tmp_path / "cut.safetensors"
        bad.write_bytes(good.read_bytes()[:5000])
        args = ["--init", str(bad)]
    elif case == "pickle":
        marker = tmp_path / "pwned"

        class Evil:
            def __reduce__(self):
                return (open, (str(marker), "w"))

        bad = tmp_path / "evil.pth"
        torch.save({"fc.weight": Evil()}, bad)
        args = ["--init", str(bad)]
    else:
        args += ["--freeze", "inception9z"]
    code, out, err = run_cli([*TINY, *args, "--out", str(tmp_path / "run")], capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("googlenet")]
    assert len(lines) == 1 and "Traceback" not in err, err
    expected = {"other_arch": "holds arch googlenet, not googlenet_bn", "truncated": "not a valid googlenet weights",
                "pickle": "nothing in it was run", "bad_layer": "no such layer"}[case]
    assert expected in lines[0]
    if case == "pickle":
        assert not (tmp_path / "pwned").exists()
