"""W processes train what one process trains with the same global batch: dropout masks drawn for the whole global
batch (train/dropout.py) and each image's augmentation seeded by its global position (train/data.FolderSource),
checked here rank by rank in one process; tests/test_multinode.py runs the two as real torchrun agents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from googlenet.models import build
from googlenet.train.config import TrainConfig
from googlenet.train.data import build_data, global_batches, mix, shard
from googlenet.train.dropout import GlobalRowDropout, install, spread


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.4, 0.7])
def test_one_process_draws_what_nn_dropout_draws_and_ranks_draw_its_rows(dtype, p):
    x = torch.randn(9, 1024, dtype=dtype)
    torch.manual_seed(11)
    reference = nn.Dropout(p).train()(x)
    assert 0.2 < float((reference == 0).float().mean()) < 0.8  # a real mask, not all or nothing
    drop = GlobalRowDropout(p).train()
    drop.rows = (9, 0, 1)
    torch.manual_seed(11)
    assert torch.equal(drop(x), reference)
    for world in (2, 3, 4):
        for rank in range(world):
            drop.rows = (9, rank, world)
            torch.manual_seed(11)
            assert torch.equal(drop(x[rank::world]), reference[rank::world]), (world, rank)


def test_rows_unset_eval_mode_and_a_padded_rank_fall_back_to_plain_dropout():
    drop = GlobalRowDropout(0.5).train()
    x = torch.ones(4, 8)
    torch.manual_seed(0)
    plain = nn.Dropout(0.5).train()(x)
    torch.manual_seed(0)
    assert torch.equal(drop(x), plain)
    drop.rows = (1, 1, 2)  # a global batch of 1 row: rank 1 runs a weight-0 image of its own
    torch.manual_seed(5)
    padded = drop(torch.ones(1, 64))
    torch.manual_seed(5)
    assert torch.equal(padded, nn.Dropout(0.5).train()(torch.ones(1, 64)))
    drop.eval()
    drop.rows = (4, 0, 1)
    assert torch.equal(drop(x), x)


def test_install_swaps_every_dropout_of_the_paper_net_and_keeps_its_state_dict():
    model = build("googlenet", num_classes=5, aux_logits=True)
    keys = list(model.state_dict())
    ps = sorted(m.p for m in model.modules() if type(m) is nn.Dropout)
    swapped = install(model)
    assert sorted(m.p for m in swapped) == ps == [0.4, 0.7, 0.7]  # main head, two aux heads
    assert not [m for m in model.modules() if type(m) is nn.Dropout]
    assert list(model.state_dict()) == keys
    spread(swapped, (8, 1, 2))
    assert all(m.rows == (8, 1, 2) for m in swapped)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("global") / "images"
    rng = np.random.default_rng(3)
    for split in ("train", "val"):
        for c, name in enumerate(("a", "b")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(7):
                Image.fromarray(rng.integers(0, 255, (30 + i, 41, 3), dtype=np.uint8)).save(d / f"{i}.jpg")
    return root


def test_each_rank_augments_its_rows_of_the_global_batch_as_one_process_does(folder):
    cfg = TrainConfig(data=str(folder), input_size=32, workers=0, augment="paper")
    source = build_data(cfg, torch.device("cpu")).train
    assert source.seeds_by_global_position
    batches = global_batches(len(source), 5, shuffle=True, seed=4, epoch=1)  # 14 images: 5, 5, 4
    seed = mix(4, 1, 0)
    one = list(source.batches(shard(batches, 0, 1), 0, seed))
    for world in (2, 3):
        ranks = [list(source.batches(shard(batches, r, world), 0, seed, spread=(r, world))) for r in range(world)]
        for step, (images, labels, _) in enumerate(one):
            for r in range(world):
                assert torch.equal(ranks[r][step][0], images[r::world]), (world, r, step)
                assert torch.equal(ranks[r][step][1], labels[r::world])
    # ... and the draws are real: another epoch's seed augments the same images otherwise
    other = list(source.batches(shard(batches, 0, 1), 0, mix(4, 2, 0)))
    assert all(not torch.equal(a[0], b[0]) for a, b in zip(one, other))


def test_shards_read_by_index_train_bit_for_bit_what_their_folder_trains(folder, tmp_path, capsys):
    from safetensors.torch import load_file

    from googlenet.cli import main

    assert main(["shards", "--data", str(folder), "--out", str(tmp_path / "shards"), "--shard-size", "8KB"]) == 0
    runs = {}
    for name, data, extra in (("folder", folder, []), ("shards", tmp_path / "shards", ["--shard-read", "index"]),
                              ("stream", tmp_path / "shards", [])):
        capsys.readouterr()
        code = main(["train", "--data", str(data), "--arch", "googlenet", "--input-size", "64", "--batch-size", "6",
                     "--epochs", "1", "--precision", "fp32", "--seed", "3", "--workers", "1", *extra,
                     "--out", str(tmp_path / name), "--json"])
        assert code == 0, capsys.readouterr().err
        runs[name] = load_file(str(tmp_path / name / "weights.safetensors"))
    assert len(list((tmp_path / "shards" / "train").glob("*.tar"))) > 1
    assert all(torch.equal(runs["folder"][k], runs["shards"][k]) for k in runs["folder"])
    # the weights depend on what was read: the stream (its own order and draws) trains other weights
    assert not all(torch.equal(runs["folder"][k], runs["stream"][k]) for k in runs["folder"])
    capsys.readouterr()
    code = main(["train", "--data", str(folder), "--shard-read", "index", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--shard-read applies to --data SHARDS" in err, err
