"""googlenet train: configuration resolution, validation, data sharding and flag errors (fast, no training)."""

from __future__ import annotations

import pytest
import torch
import yaml

from googlenet.cli import main
from googlenet.errors import UserError
from googlenet.train.config import TrainConfig, list_recipes, load_recipe, resolve
from googlenet.train.data import global_batches, shard
from googlenet.train.loop import lr_factor


def test_recipes_ship_and_name_the_paper_values():
    assert {"paper", "caffe-quick", "fashion-quick", "bn-modern"} <= set(list_recipes())
    paper = resolve("paper")
    assert (paper.optimizer, paper.momentum, paper.schedule, paper.step_epochs, paper.step_gamma) == \
        ("sgd", 0.9, "step", 8.0, 0.96)
    assert (paper.lr, paper.reference_batch, paper.batch_size, paper.weight_decay) == (0.01, 32, 32, 2e-4)
    assert paper.aux_weight == 0.3 and paper.ema_decay > 0 and paper.augment == "paper"
    assert paper.crop_scale == (0.08, 1.0) and paper.crop_ratio[0] == 0.75
    quick = resolve("caffe-quick")
    assert (quick.schedule, quick.poly_power, quick.epochs) == ("poly", 0.5, 60)
    assert resolve("bn-modern").arch == "googlenet_bn"
    assert resolve().recipe == "fashion-quick" and resolve().arch == "googlenet"


def test_lr_scales_linearly_with_global_batch():
    cfg = resolve("paper", overrides={"batch_size": 256})
    assert cfg.peak_lr() == pytest.approx(0.01 * 256 / 32)


def test_recipe_then_file_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 7\nlr: 0.5\nbatch_size: 48\n")
    cfg = resolve("paper", str(f), {"lr": 0.25, "epochs": None})
    assert cfg.epochs == 7  # file over recipe (250)
    assert cfg.lr == 0.25  # flag over file
    assert cfg.batch_size == 48 and cfg.momentum == 0.9  # file, recipe
    f.write_text("recipe: caffe-quick\n")
    assert resolve(None, str(f)).schedule == "poly"  # a config file may name its recipe


@pytest.mark.parametrize("text,message", [
    ("epoch: 3\n", "unknown config key 'epoch'"),
    ("lr: fast\n", "lr must be float"),
    ("- 1\n", "expected a mapping"),
    ("warmup_epochs: 9\nepochs: 4\n", "warmup_epochs (9.0) must be shorter"),
])
def test_bad_config_files(tmp_path, text, message):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(UserError, match=None) as e:
        resolve(None, str(f))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_schedules():
    cfg = TrainConfig(schedule="step", step_epochs=8, step_gamma=0.96, epochs=100)
    assert lr_factor(cfg, 8 * 10 - 1, 10) == 1.0 and lr_factor(cfg, 8 * 10, 10) == pytest.approx(0.96)
    cfg = TrainConfig(schedule="poly", poly_power=0.5, epochs=4)
    assert lr_factor(cfg, 30, 10) == pytest.approx(0.25 ** 0.5)
    cfg = TrainConfig(schedule="cosine", warmup_epochs=1, epochs=3)
    assert lr_factor(cfg, 4, 10) == pytest.approx(0.5)  # warm-up is linear
    assert lr_factor(cfg, 20, 10) == pytest.approx(0.5)  # cosine half way


@pytest.mark.parametrize("n,batch,world", [(50, 16, 2), (7, 4, 3), (64, 64, 2), (3, 8, 4)])
def test_shards_cover_every_image_exactly_once(n, batch, world):
    plan = global_batches(n, batch, shuffle=True, seed=3, epoch=1)
    parts = [shard(plan, r, world) for r in range(world)]
    assert all(len(p) == len(plan) for p in parts)  # same number of steps on every rank: nobody waits
    seen = torch.cat([b for p in parts for b in p])
    assert sorted(seen.tolist()) == list(range(n))
    assert global_batches(n, batch, shuffle=True, seed=3, epoch=1)[0].tolist() == plan[0].tolist()


@pytest.mark.parametrize("flags,message", [
    (["--epochs", "0"], "expected a positive integer, got 0"),
    (["--lr", "nan"], "expected a positive finite number"),
    (["--input-size", "32"], "input_size must be in 64..1024"),
    (["--precision", "fp16", "--device", "cpu"], "fp16 needs a CUDA device"),
    (["--sync-bn"], "sync_bn needs a BatchNorm arch"),
    (["--recipe", "nope"], "unknown recipe 'nope'"),
    (["--arch", "resnet"], "unknown arch 'resnet'"),
    (["--config", "/nonexistent/c.yaml"], "config file not found"),
    (["--resume", "/nonexistent/last.pt"], "checkpoint not found"),
])
def test_bad_flags_are_one_line_exit_2(flags, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(["train", "--out", str(tmp_path / "o"), *flags]))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_recipe_files_are_complete_yaml():
    for name in list_recipes():
        assert load_recipe(name), name
        assert yaml.safe_dump(resolve(name).to_dict())


def test_every_train_flag_reaches_the_config(monkeypatch, tmp_path):
    # The preprocessing flags were parsed and then dropped (they were missing from FLAG_KEYS): each flag must end in
    # the resolved config that training runs with.
    from googlenet.cli import train as train_cli

    seen = {}

    def capture(cfg, resume, reprobe=False):
        seen["cfg"] = cfg
        raise UserError("captured")

    monkeypatch.setattr(train_cli, "_train_reporting_peer_failures", capture)
    code = main(["train", "--data", str(tmp_path), "--mean", "0.4", "0.5", "0.6", "--std", "0.2", "0.3", "0.4",
                 "--channel-order", "BGR", "--pixel-range", "255", "--grayscale", "--input-size", "96"])
    assert code == 2
    cfg = seen["cfg"]
    assert (cfg.mean, cfg.std) == ((0.4, 0.5, 0.6), (0.2, 0.3, 0.4))
    assert (cfg.channel_order, cfg.pixel_range, cfg.grayscale, cfg.input_size) == ("BGR", 255, True, 96)
    handled_apart = {"recipe", "config", "resume", "json", "reprobe"}
    parser = __import__("googlenet.cli", fromlist=["build_parser"]).build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["train"]
    dests = {a.dest for a in sub._actions if a.dest != "help"}
    assert dests - handled_apart == set(train_cli.FLAG_KEYS)
