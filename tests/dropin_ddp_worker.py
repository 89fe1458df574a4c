"""Run by tests/test_norms_dropin.py under torchrun (gloo): torchvision's ResNet-18 converted to each
Lp kind, its norms synchronized (convert_sync), trained two SGD steps by DistributedDataParallel on
each rank's shard of the global batch; rank 0 saves every kind's final state_dict to argv[1].

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/dropin_ddp_worker.py OUT

The test trains the same model in one process on the whole global batch and compares.
"""
from __future__ import annotations

import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchvision
from torch.nn.parallel import DistributedDataParallel

from normmatters.norms import convert_norms
from normmatters.norms.sync_batchnorm import convert_sync

KINDS = ("l1", "linf", "topk", "mean")
OPTIONS = {"topk": {"k": 3}}  # ResNet-18's last layers hold 1 value per sample and channel at 32 × 32
STEPS, BATCH, LR = 2, 8, 0.05


def resnet(kind: str) -> torch.nn.Module:
    """Stock ResNet-18 (ReLU(inplace=True) after its norms) converted to ``kind``, in float64."""
    torch.manual_seed(0)
    return convert_norms(torchvision.models.resnet18(num_classes=10), kind, **OPTIONS.get(kind, {})).double()


def batches() -> list:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 3, 32, 32, generator=g, dtype=torch.float64),
             torch.randint(0, 10, (BATCH,), generator=g)) for _ in range(STEPS)]


def train(module, shards) -> None:
    """Two SGD steps of ``module`` (a model, or its DistributedDataParallel wrapper) on ``shards``."""
    opt = torch.optim.SGD(module.parameters(), lr=LR)
    for x, y in shards:
        opt.zero_grad()
        loss = F.cross_entropy(module(x), y)
        assert torch.isfinite(loss), loss
        loss.backward()
        opt.step()


def main(out: str) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank, world = dist.get_rank(), dist.get_world_size()
    part = BATCH // world
    shards = [(x[rank * part:(rank + 1) * part], y[rank * part:(rank + 1) * part]) for x, y in batches()]
    results = {}
    for kind in KINDS:
        model = convert_sync(resnet(kind))
        train(DistributedDataParallel(model), shards)  # DDP averages the ranks' gradients in backward
        results[kind] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
