"""Just enough torch.distributed for train.py: started by torchrun or not at all.

``torchrun --nproc_per_node=N train.py ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; the process group
uses nccl on CUDA and gloo on CPU. Without torchrun every helper here is a no-op for one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but torch sees no CUDA device; use device=cpu or device=auto")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def setup(device: str) -> Context:
    """Join the process group torchrun describes (if any) and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Context(rank, world, dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (in place) and return it."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def stop_vote(flag: bool, device: torch.device) -> torch.Tensor | None:
    """This rank's stop request, maxed over ranks, as a device tensor that the loop reads together with
    the step's loss (:class:`~zoo.train.loop.step.LossWatch`), so that asking every rank costs no read of
    its own. None for one process, which reads its own flag."""
    if not dist.is_initialized():
        return None
    t = torch.full((), float(flag), device=device)  # filled on the device: no copy from the host
    dist.all_reduce(t, op=dist.ReduceOp.MAX)  # queued on the device (nccl); the loop waits for nothing here
    return t


def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers into every rank's ``module`` (in place)."""
    if dist.is_initialized():
        for t in module.state_dict().values():
            dist.broadcast(t, 0)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
