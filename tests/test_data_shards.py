"""Each rank's share of an epoch (data parallelism): in training the ranks' batches, concatenated in
rank order, are the one-process batch; in evaluation every sample is read by exactly one rank."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from normmatters.data import DeviceLoader, FolderDataLoader, TensorDataLoader

N, WORLD = 50, 2
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _images():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (N, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(N) % 10


def _loaders(kind, train, rank=0, world=1, batch=8):
    x, y = _images()
    common = dict(batch_size=batch, device="cpu", train=train, seed=3, rank=rank, world=world)
    if kind == "device":
        return DeviceLoader(x, y, mean=MEAN, std=STD, **common)
    if kind == "tensor":
        return TensorDataLoader(x, y, mean=MEAN, std=STD, **common)
    return FolderDataLoader(TensorDataset(x.float(), y), **common)


@pytest.mark.parametrize("kind", ["device", "tensor", "folder"])
def test_training_shards_make_the_global_batch(kind):
    whole = list(_loaders(kind, True).epoch(4))
    shards = [list(_loaders(kind, True, r, WORLD).epoch(4)) for r in range(WORLD)]
    assert all(len(s) == len(whole) == N // 8 for s in shards)
    for i, (x, y) in enumerate(whole):
        torch.testing.assert_close(torch.cat([s[i][0] for s in shards]), x)
        assert torch.equal(torch.cat([s[i][1] for s in shards]), y)


@pytest.mark.parametrize("kind", ["device", "tensor", "folder"])
def test_evaluation_shares_cover_every_sample_once(kind):
    labels = torch.cat([y for r in range(WORLD) for _, y in _loaders(kind, False, r, WORLD).epoch(0)])
    assert sorted(labels.tolist()) == sorted((torch.arange(N) % 10).tolist())
    assert [len(_loaders(kind, False, r, WORLD)) for r in range(WORLD)] == [4, 3]  # 7 batches of <= 8, round-robin


def test_a_global_batch_that_does_not_split_is_an_error():
    with pytest.raises(ValueError, match=r"batch_size=9 \(the global batch\).*valid: a multiple of 2"):
        _loaders("device", True, 0, WORLD, batch=9)
