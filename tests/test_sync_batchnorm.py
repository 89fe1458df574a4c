"""Synchronized Lp batch norm under DistributedDataParallel (gloo, 2 CPU processes) against one
process: with synchronized statistics the weights after a few SGD steps equal those of one process
on the same global batch; with per-device statistics they equal one process that normalizes each
half of the batch on its own (and differ from the global-batch run)."""
from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

from normmatters.norms import build_norm
from normmatters.norms.sync_batchnorm import SyncLpBatchNorm, convert_sync

KINDS = ("l2", "l1", "linf", "topk", "mean")
WORLD, STEPS, BATCH = 2, 3, 8


class Net(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.norm = build_norm(kind, 4, k=5, momentum=0.3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(F.relu(self.norm(self.conv(x))).mean((2, 3)))


def _batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 3, 5, 5, generator=g) * 2 + 1, torch.randint(0, 3, (BATCH,), generator=g))
            for _ in range(STEPS)]


def _net(kind):
    torch.manual_seed(0)
    return Net(kind)


def _train(model, batches, loss_fn):
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for x, y in batches:
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    results = {}
    half = BATCH // WORLD
    shards = [(x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half]) for x, y in _batches()]
    for kind in KINDS:
        for sync in (True, False):
            model = _net(kind)
            if sync:
                model = convert_sync(model)
            ddp = nn.parallel.DistributedDataParallel(model)
            opt = torch.optim.SGD(ddp.parameters(), lr=0.5, momentum=0.9)
            for x, y in shards:
                opt.zero_grad()
                F.cross_entropy(ddp(x), y).backward()
                opt.step()
            results[(kind, sync)] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "rank0.pt"
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return torch.load(out)


def _whole_batch(model, x, y):
    return F.cross_entropy(model(x), y)


def _per_half(model, x, y):
    """One process doing what 2 ranks with per-device statistics do: each half normalized on its own,
    the loss the mean of the halves' mean losses (DDP averages the ranks' gradients)."""
    return sum(F.cross_entropy(model(xh), yh) for xh, yh in zip(x.chunk(WORLD), y.chunk(WORLD))) / WORLD


@pytest.mark.parametrize("kind", KINDS)
def test_synchronized_equals_one_process_on_the_global_batch(ddp_results, kind):
    ref = _train(_net(kind), _batches(), _whole_batch)
    got = ddp_results[(kind, True)]
    assert got.keys() == ref.keys()
    for key in ref:  # weights, biases and the running statistics of the global batch
        torch.testing.assert_close(got[key], ref[key], rtol=2e-5, atol=2e-6, msg=lambda m: f"{kind} {key}: {m}")


@pytest.mark.parametrize("kind", KINDS)
def test_per_device_statistics_differ_as_expected(ddp_results, kind):
    got = ddp_results[(kind, False)]
    per_half = _train(_net(kind), _batches(), _per_half)
    whole = _train(_net(kind), _batches(), _whole_batch)
    torch.testing.assert_close(got["conv.weight"], per_half["conv.weight"], rtol=2e-5, atol=2e-6)
    assert (got["conv.weight"] - whole["conv.weight"]).abs().max() > 1e-4


def test_single_process_sync_layer_is_the_plain_layer():
    """Without a process group the synchronized layer is exactly LpBatchNorm."""
    torch.manual_seed(0)
    x = torch.randn(6, 4, 3, 3)
    for kind in KINDS:
        plain = build_norm(kind, 4)
        synced = convert_sync(nn.Sequential(build_norm(kind, 4)))[0]
        assert isinstance(synced, SyncLpBatchNorm)
        torch.testing.assert_close(synced(x), plain(x))


def test_unsynchronizable_options_are_refused():
    layer = build_norm("topk", 4, ghost_beta=0.75)
    with pytest.raises(ValueError, match=r"ghost_beta=0.75.*valid: None"):
        convert_sync(nn.Sequential(layer))


@pytest.mark.parametrize("kind", KINDS)
def test_conversion_keeps_the_layers_dtype(kind):
    """A float64 model's synchronized norms stay float64 (they were rebuilt in float32, rounding the
    weights and statistics that load_state_dict copied in)."""
    layer = build_norm(kind, 4).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(1 / 3)
    synced = convert_sync(nn.Sequential(layer))[0]
    assert all(t.dtype == torch.float64 for t in (*synced.parameters(), *synced.buffers()) if t.is_floating_point())
    for key, value in layer.state_dict().items():
        assert torch.equal(synced.state_dict()[key], value), key
