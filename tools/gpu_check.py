"""The prepared accelerator check (run by tools/gpu_check.sh): on whatever GPU the machine has, in one go,

* the paper net and googlenet_bn training steps, bf16 autocast, channels_last, torch.compile: images/s;
* the data path that feeds them: WebDataset shards (pre-resized to 256) through the training stream with one loader
  worker per core: images/s;
* NCCL all-reduce bus bandwidth when there are several GPUs (the nccl-tests formula, 2 (n - 1) / n * bytes / s);
* the main job (``googlenet train``, what ``make train`` runs) on the GPU: its held-out top-1 and wall time.

It prints one line of figures (and ``--json`` a JSON object after it). ``--smoke`` runs every part at toy sizes,
without compile, on whatever device there is: the suite runs it on CPU so the script cannot rot unseen.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_rate(arch: str, device: torch.device, *, batch: int, size: int, steps: int, compile: bool) -> float:
    """Images/s of TrainStep (bf16, channels_last, fused SGD) after warm-up steps that include compiling."""
    from googlenet.models import create_model
    from googlenet.train.step import TrainStep

    model = create_model(arch, num_classes=1000).to(device).train()
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4, **fused)
    step = TrainStep(model, optimizer, precision="bf16", channels_last=True, compile=compile, device=device)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)
    for _ in range(3):
        step(images, labels)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(images, labels)
    sync(device)
    return batch * steps / (time.perf_counter() - t0)


def loader_rate(*, files: int, samples: int, size: int, workers: int) -> float:
    """Images/s of the training stream over pre-resized shards of generated photo-like JPEGs, ``workers`` loader
    processes (the path ``train --data SHARDS`` runs)."""
    from torch.utils.data import DataLoader

    from googlenet.bench.data import MEAN, STD, make_jpegs
    from googlenet.data.fast import FastPaperCrop
    from googlenet.data.shards import TrainStream, open_shard_set, write_shards

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        folder = Path(tmp) / "images" / "train" / "all"
        folder.mkdir(parents=True)
        make_jpegs(folder, files)
        write_shards(str(folder.parents[1]), Path(tmp) / "shards", shard_bytes=8 << 20, resize=256,
                     workers=workers, say=lambda _: None)
        stream = TrainStream(open_shard_set(str(Path(tmp) / "shards")), "train", FastPaperCrop(size, MEAN, STD),
                             seed=0, buffer=256)
        loader = DataLoader(stream, batch_size=None, num_workers=workers, prefetch_factor=16 if workers else None,
                            collate_fn=lambda x: x)
        it = iter(loader)
        for _ in range(min(samples // 4, 256)):  # workers started, buffers filled
            next(it)
        t0 = time.perf_counter()
        for _ in range(samples):
            next(it)
        return samples / (time.perf_counter() - t0)


def _allreduce_worker(rank: int, world: int, port: int, nbytes: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=torch.device("cuda", rank))
    x = torch.ones(nbytes // 4, device="cuda")
    for _ in range(5):
        dist.all_reduce(x)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = 20
    for _ in range(n):
        dist.all_reduce(x)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / n
    if rank == 0:
        Path(out).write_text(json.dumps({"busbw_gb_s": 2 * (world - 1) / world * nbytes / seconds / 1e9}))
    dist.destroy_process_group()


def allreduce_busbw(nbytes: int = 256 << 20) -> float | None:
    world = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if world < 2:
        return None
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        mp.spawn(_allreduce_worker, args=(world, port, nbytes, f.name), nprocs=world)
        return json.loads(Path(f.name).read_text())["busbw_gb_s"]


def main_job(smoke: bool) -> dict:
    """``googlenet train`` as ``make train`` runs it (in smoke mode: a few hundred images, one epoch)."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-train-") as out:
        args = [sys.executable, "-m", "googlenet", "train", "--out", out, "--json"]
        if smoke:
            args += ["--epochs", "1", "--max-train-images", "128", "--max-eval-images", "64", "--input-size", "64"]
        t0 = time.perf_counter()
        proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"gpu_check: the main job failed: {proc.stderr.strip().splitlines()[-1:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        return {"top1": result["top1"], "wall_s": wall, "train_s": result["wall_s"]}


def run(smoke: bool) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "no GPU (cpu)"
    big = device.type == "cuda" and not smoke
    batch, size, steps = (256, 224, 20) if big else (4, 64, 2)
    compile = not smoke
    figures = {"device": name, "gpus": torch.cuda.device_count() if device.type == "cuda" else 0,
               "torch": torch.__version__, "batch": batch, "input_size": size, "compile": compile}
    for arch in ("googlenet", "googlenet_bn"):
        figures[f"{arch}_train_img_s"] = train_rate(arch, device, batch=batch, size=size, steps=steps,
                                                    compile=compile)
    workers = 0 if smoke else len(os.sched_getaffinity(0))  # one loader worker per core the job may use
    figures["loader_workers"] = workers
    figures["loader_img_s"] = loader_rate(files=8 if smoke else 256, samples=16 if smoke else 4096,
                                          size=64 if smoke else 224, workers=workers)
    figures["nccl_busbw_gb_s"] = allreduce_busbw() if not smoke else None
    figures.update({f"main_job_{k}": v for k, v in main_job(smoke).items()})
    return figures


def line(f: dict) -> str:
    nccl = f"{f['nccl_busbw_gb_s']:.1f} GB/s" if f["nccl_busbw_gb_s"] is not None else "n/a (1 GPU)"
    return (f"gpu_check: {f['device']} x{max(f['gpus'], 1)}, torch {f['torch']} | train bf16 channels_last"
            f"{' compile' if f['compile'] else ''} batch {f['batch']} at {f['input_size']}: googlenet "
            f"{f['googlenet_train_img_s']:.0f} img/s, googlenet_bn {f['googlenet_bn_train_img_s']:.0f} img/s | "
            f"shards loader {f['loader_img_s']:.0f} img/s "
            f"({f'{w} workers' if (w := f['loader_workers']) else 'in-process'}) | nccl all-reduce {nccl} | "
            f"main job top-1 {100 * f['main_job_top1']:.2f}% in {f['main_job_wall_s']:.0f} s wall")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes, no compile: checks the script runs")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON object")
    a = parser.parse_args()
    figures = run(a.smoke)
    print(line(figures), flush=True)
    if a.json:
        print(json.dumps(figures))
