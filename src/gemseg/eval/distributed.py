"""Data-parallel evaluation: one process per device, each on its own shard of the images, counts summed
with an all-reduce. Launch with ``torchrun --nproc_per_node=N`` (NCCL on GPUs, gloo on CPU); a plain
``python``/``gemseg`` run is a world of one and needs no process group."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as torch_dist


@dataclass
class Dist:
    """This process's place in the run and the collectives it needs (no-ops in a world of one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "nccl", "gloo", or None for a single process
    owns_group: bool = False  # this object created the process group (and destroys it in close())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence) -> list:
        """This rank's items: every ``world_size``-th one starting at ``rank`` (a fixed, disjoint split)."""
        return list(items[self.rank::self.world_size])

    def _device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (returned on the CPU)."""
        if self.world_size == 1:
            return tensor.cpu()
        t = tensor.to(self._device()).clone()
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
        return t.cpu()

    def max(self, value: float) -> float:
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._device())
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return float(t.item())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        if self.world_size == 1:
            return obj
        box = [obj]
        torch_dist.broadcast_object_list(box, src=0, device=self._device())
        return box[0]

    def gather(self, obj: Any) -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if self.world_size == 1:
            return [obj]
        out: list = [None] * self.world_size
        torch_dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world_size > 1:
            torch_dist.barrier()

    def close(self) -> None:
        if self.owns_group and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def init_from_env(device: str | torch.device | None = None) -> Dist:
    """Join the process group ``torchrun`` describes in the environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); a world of one when those are absent.

    ``device``: the device type the run uses; CUDA selects NCCL and the local rank's GPU, anything
    else gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist()
    if not torch_dist.is_available():
        raise RuntimeError("torch.distributed is not available in this torch build")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    owns = False
    if not torch_dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        torch_dist.init_process_group(backend=backend)
        owns = True
    return Dist(rank=torch_dist.get_rank(), world_size=torch_dist.get_world_size(), local_rank=local_rank,
                backend=torch_dist.get_backend(), owns_group=owns)
