"""DDP as a switch (nanoGPT's ``ddp = "RANK" in os.environ``): one process does nothing distributed.

Under torchrun each process joins a process group (gloo on CPU, nccl on GPU) with a timeout, so a dying worker ends
the job with an error instead of a hang (torchrun also stops the surviving workers when one exits).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import UserError


@dataclass
class Dist:
    ddp: bool
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64 so counts stay exact)."""
        if not self.ddp:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def all_true(self, flag: bool) -> bool:
        if not self.ddp:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def gather_objects(self, obj) -> list:
        if not self.ddp:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.ddp:
            dist.barrier()

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {name} asked for, but CUDA is not available here")
        if name == "cuda":
            return torch.device("cuda", local_rank)
    return torch.device(name)


def setup(device: str, timeout_s: float) -> Dist:
    if "RANK" not in os.environ:
        return Dist(False, 0, 1, pick_device(device))
    dev = pick_device(device, int(os.environ.get("LOCAL_RANK", 0)))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    timeout = timedelta(seconds=timeout_s)
    # The env:// store, its keys under a prefix of torchrun's restart number. torchrun's agent keeps one TCPStore for
    # every restart of a job, and ``init_process_group`` writes the same keys each time (no attempt number in them). A
    # rank of a restarted group can then read the dead group's gloo address before the new rank 0 overwrites it, and
    # fails with "connectFullMesh ... Connection refused" (seen in CI). A prefix per restart makes each rank wait for
    # this attempt's keys.
    store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
    store = dist.PrefixStore(f"googlenet/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", store=store, rank=rank, world_size=world,
                            timeout=timeout, device_id=dev if dev.type == "cuda" else None)
    return Dist(True, dist.get_rank(), dist.get_world_size(), dev)


def teardown(d: Dist) -> None:
    if d.ddp and dist.is_initialized():
        dist.destroy_process_group()
