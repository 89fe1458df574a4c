"""Data-parallel training under ``torchrun``: the process group, which rank writes, and the few
collectives the loop needs.

``torchrun --nproc_per_node=N scripts/train.py ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; with
WORLD_SIZE > 1 every rank joins one process group (NCCL on CUDA, gloo on the CPU), reads its shard
of each global batch (``data.batch_size`` is the global batch) and trains a DistributedDataParallel
copy of the model. Rank 0 alone writes the run directory (config, meta, tables, wandb,
checkpoints); every rank reads the checkpoint on resume, so a multi-node run needs the run
directory on a shared filesystem. Without torchrun (or with one process) nothing here does anything.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1


SINGLE = Ranks()


def from_env() -> Ranks:
    """The ranks torchrun set in the environment (one process without it)."""
    def number(key: str, default: int) -> int:
        value = os.environ.get(key, str(default))
        if not value.isdigit():
            raise ValueError(f"environment variable {key}={value!r} is invalid; valid: a non-negative integer (set by torchrun)")
        return int(value)

    ranks = Ranks(number("RANK", 0), number("WORLD_SIZE", 1), number("LOCAL_RANK", 0))
    if ranks.world < 1 or ranks.rank >= ranks.world:
        raise ValueError(f"RANK={ranks.rank} and WORLD_SIZE={ranks.world} are invalid; valid: 0 <= RANK < WORLD_SIZE")
    return ranks


def device_for(ranks: Ranks, device: torch.device) -> torch.device:
    """Each rank's own GPU (cuda:LOCAL_RANK) when training on CUDA."""
    if device.type == "cuda" and ranks.parallel:
        if ranks.local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={ranks.local_rank} has no GPU: {torch.cuda.device_count()} visible; "
                             "valid: --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(ranks.local_rank)
        return torch.device("cuda", ranks.local_rank)
    return device


def start(ranks: Ranks, device: torch.device) -> bool:
    """Join the process group; True when this call made it (a caller's own group is left alone)."""
    if not ranks.parallel or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    # a rank that dies is noticed by the others' next collective; the timeout bounds a silent hang
    dist.init_process_group(backend, timeout=timedelta(minutes=10))
    return True


def stop(started: bool) -> None:
    if started and dist.is_initialized():
        dist.destroy_process_group()


def sum_(t: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """In place: the sum of t over ranks (metrics, counts)."""
    if ranks.parallel:
        dist.all_reduce(t)
    return t


def any_(flag: bool, ranks: Ranks, device: torch.device) -> bool:
    """True on every rank when it is true on any (a stop request, a non-finite loss)."""
    if not ranks.parallel:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(ranks: Ranks) -> None:
    if ranks.parallel:
        dist.barrier()


@torch.no_grad()
def share_buffers(model: torch.nn.Module, ranks: Ranks) -> None:
    """Rank 0's buffers (running statistics) on every rank: what its checkpoint holds and evaluates."""
    if ranks.parallel:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


def wrap(model: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """The model every rank's forward uses: DistributedDataParallel when there are several."""
    if not ranks.parallel:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
