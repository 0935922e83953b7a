"""The fast data path (googlenet.data.fast) against torchvision's ImageFolder recipe, and ``bench data``'s smoke run."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from googlenet.bench.data import (MEAN, PAPER_REFERENCE, PIL_PAPER_REFERENCE, STD, make_jpegs,
                                   pil_paper_transform, reference_transform)
from googlenet.data.fast import train_transform
from googlenet.data.folder import ImageFolderDataset, Sample, Skipped

LOW = min((0 - m) / s for m, s in zip(MEAN, STD))
HIGH = max((1 - m) / s for m, s in zip(MEAN, STD))


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    small, large = tmp_path_factory.mktemp("jpegs_small"), tmp_path_factory.mktemp("jpegs_large")
    # 1000x750 files with big crops take the reduced-size (draft) decoding; 200x150 ones decode_jpeg.
    return make_jpegs(small, 4, size=(200, 150)) + make_jpegs(large, 2, size=(1000, 750), seed=1)


def test_output_shape_dtype_range(jpegs):
    tf = train_transform(64, MEAN, STD)
    for path in jpegs:
        x = tf(path)
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and x.is_contiguous()
        assert LOW - 1e-4 <= x.min().item() and x.max().item() <= HIGH + 1e-4
    raw = train_transform(64, MEAN, STD, normalize=False)(jpegs[0])
    assert raw.shape == (3, 64, 64) and raw.dtype == torch.uint8


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.6, 1.0)])  # (0.6, 1): big crops of the 1000x750 files: draft
def test_same_seed_same_crop_and_flip_as_torchvision(jpegs, scale):
    """Same random draws, same crop box and flip: the pictures match up to decoder / resampler rounding."""
    from torchvision import transforms as T

    fast = train_transform(96, MEAN, STD, scale=scale)
    ref = T.Compose([T.RandomResizedCrop(96, scale=scale), T.RandomHorizontalFlip(), T.ToTensor(),
                     T.Normalize(MEAN, STD)])
    for i, path in enumerate(jpegs):
        torch.manual_seed(i)
        a, next_a = fast(path), torch.rand(1)
        torch.manual_seed(i)
        b, next_b = ref(Image.open(path).convert("RGB")), torch.rand(1)
        # Normalised units (1 = one std, ~57 grey levels): DCT-scaled decoding differs by a level or two.
        assert (a - b).abs().mean().item() < 0.03, (path, (a - b).abs().mean().item())
        assert next_a == next_b  # the same number of draws: a seeded run stays in step with torchvision's


def test_odd_files_take_the_careful_loader_and_bad_files_are_skipped(tmp_path, jpegs):
    png = tmp_path / "a.png"
    Image.fromarray(np.full((80, 90, 4), 200, np.uint8), "RGBA").save(png)
    cmyk = tmp_path / "c.jpg"
    Image.new("CMYK", (90, 80), (0, 50, 100, 0)).save(cmyk)
    rotated = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: the careful loader applies it
    Image.new("RGB", (90, 80), (10, 20, 30)).save(rotated, exif=exif)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(jpegs[0].read_bytes()[:200])
    samples = [Sample(str(p), k) for k, p in enumerate([png, cmyk, rotated, broken, tmp_path / "missing.jpg"])]
    data = ImageFolderDataset(samples, load=train_transform(48, MEAN, STD))
    items = [data[i] for i in range(len(data))]
    for image, label in items[:3]:
        assert image.shape == (3, 48, 48)
    assert [type(x) for x in items[3:]] == [Skipped, Skipped]
    assert items[4].reason == "file not found"


def test_reference_transform_shape(jpegs):
    assert reference_transform(32)(jpegs[0]).shape == (3, 32, 32)
    x = pil_paper_transform(32)(jpegs[0])
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32


def test_bench_data_smoke_json(capsys):
    from googlenet.cli import main

    assert main(["bench", "data", "--files", "3", "--rounds", "1", "--input-size", "64", "--source-size", "120x90",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) >= {"machine", "versions", "results"}
    assert {"cpu", "cores", "threads", "gpu"} <= set(out["machine"])
    roles = sorted(r["role"] for r in out["results"])
    # plain recipe; full paper augmentation against torchvision's PIL transforms and train's previous path; the
    # same from shards, as written and pre-resized
    assert roles == ["project"] * 4 + ["reference"] * 3
    fast_paper = next(r for r in out["results"] if "FastPaperCrop" in r["name"])
    assert {PIL_PAPER_REFERENCE, PAPER_REFERENCE} <= set(fast_paper["ratios"])
    for r in out["results"]:
        assert {"name", "role", "precision", "batch_size", "images_per_s", "ms_per_batch", "spread"} <= set(r)
        assert r["images_per_s"] > 0 and r["batch_size"] == 3
        assert "3 JPEGs 120x90 per round" in r["note"] or "TrainStream" in r["note"]
    assert sum("shards" in r["name"] for r in out["results"]) == 2


def test_the_shard_contender_streams_what_training_decodes(tmp_path):
    from googlenet.bench.data import shard_stream

    folder = tmp_path / "folder" / "train" / "all"
    folder.mkdir(parents=True)
    make_jpegs(folder, 5, (400, 300))
    stream = shard_stream(tmp_path / "folder", tmp_path / "small", 64, 256)
    samples = [next(stream) for _ in range(12)]  # endless: resampled shards, as training reads them
    assert all(x.shape == (3, 64, 64) and x.dtype == torch.float32 and y == 0 for x, y in samples)
    import tarfile

    from PIL import Image

    with tarfile.open(next((tmp_path / "small" / "train").glob("*.tar"))) as tar:
        member = next(m for m in tar if m.name.endswith(".jpg"))
        assert min(Image.open(tar.extractfile(member)).size) == 256
