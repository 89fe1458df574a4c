"""Datasets and loaders: CIFAR-10/100 (torchvision or image folder/archive, decoded once and cached),
ImageNet (torchvision ImageFolder), and the on-device CIFAR loader.

The training loop only calls :func:`build_data`::

    data = build_data(cfg.data, device, seed=cfg.seed)
    for epoch in range(start_epoch, epochs):
        for x, y in data.train.epoch(epoch): ...
        for x, y in data.test.epoch(0): ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol, runtime_checkable

import torch

from .cifar import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    CIFAR_NUM_CLASSES,
    CIFAR_STATS,
    load_cifar,
)
from .config import DATASETS, DataCfg, parse_data_cfg
from .device_loader import DeviceLoader, derive_seed, epoch_plan
from .imagenet import IMAGENET_MEAN, IMAGENET_STD
from .loader import FolderDataLoader, TensorDataLoader

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CIFAR_STATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DATASETS",
    "DataBundle",
    "DeviceLoader",
    "FolderDataLoader",
    "Loader",
    "TensorDataLoader",
    "build_data",
    "class_balanced_subset",
    "derive_seed",
    "epoch_plan",
]


@runtime_checkable
class Loader(Protocol):
    batch_size: int
    num_samples: int

    def __len__(self) -> int: ...

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@dataclass
class DataBundle:
    train: Loader  # loader.epoch(e) -> (x float on device, y int64 on device); len = batches/epoch
    test: Loader  # no augmentation, no shuffle, keeps the last partial batch
    num_classes: int
    label: str  # e.g. "CIFAR-10 (JPEG copy), train subset 20000/50000, test 10000"
    num_train: int
    num_test: int
    classes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Subsets
# ----------------------------------------------------------------------------------------------


def class_balanced_subset(labels: torch.Tensor, n: int, subset_seed: int = 0) -> torch.Tensor:
    """Sorted indices of a fixed class-balanced subset of ``n`` samples.

    Classes are visited round-robin, each in a seeded random order of its samples: every class
    gets ``n // C`` samples and the remainder goes to classes in a seeded order (a class with too
    few samples is exhausted and the others fill in). Depends only on ``(labels, n, subset_seed)``.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    total = len(labels)
    if not 1 <= n <= total:
        raise ValueError(f"train_subset={n} is invalid; valid: 1..{total}")
    g = torch.Generator().manual_seed(derive_seed(subset_seed, 0, "subset"))
    perm = torch.randperm(total, generator=g)
    lab = labels[perm]
    num_classes = int(labels.max()) + 1
    grouped = torch.argsort(lab, stable=True)  # by class, keeping the permuted order inside a class
    glab = lab[grouped]
    counts = torch.bincount(glab, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(total) - starts[glab]  # position of each sample inside its class
    class_pos = torch.randperm(num_classes, generator=g)
    key = rank * num_classes + class_pos[glab]
    chosen = perm[grouped[torch.argsort(key)[:n]]]
    return torch.sort(chosen).values


def _subset_check(c: DataCfg, where: str):
    def check(classes, counts):
        n = counts["train"]
        if c.train_subset is not None and c.train_subset > n:
            raise ValueError(
                f"data.train_subset={c.train_subset} exceeds the {n} training images of {where}; valid: null or 1..{n}"
            )

    return check


# ----------------------------------------------------------------------------------------------
# build_data
# ----------------------------------------------------------------------------------------------


def _label(base: str, n_train: int, n_full: int, n_test: int, subset: bool) -> str:
    train = f"train subset {n_train}/{n_full}" if subset else f"train {n_train}"
    return f"{base}, {train}, test {n_test}"


def build_data(cfg, device: torch.device, seed: int, progress: bool = True) -> DataBundle:
    """Build train/test loaders for ``cfg`` (see ``configs/data/*.yaml``) on ``device``.

    ``seed`` drives the shuffling and augmentation (batches depend only on ``(seed, epoch)``);
    the training subset depends only on ``cfg.subset_seed``, so all arms of an experiment share it.
    """
    c = parse_data_cfg(cfg)
    device = torch.device(device)
    if c.name == "imagenet":
        return _build_imagenet(c, device, seed, progress)

    where = c.path if c.path is not None else c.download_root
    data = load_cifar(
        c.name,
        c.path,
        download_root=c.download_root,
        download=c.download,
        cache_dir=c.cache_dir,
        progress=progress,
        validate=_subset_check(c, where),
    )
    xtr, ytr = data.train_images, data.train_labels
    n_full = len(ytr)
    if c.train_subset is not None:
        keep = class_balanced_subset(ytr, c.train_subset, c.subset_seed)
        xtr, ytr = xtr[keep], ytr[keep]
    mean, std = CIFAR_STATS[c.name]
    if c.loader == "device":
        common = dict(device=device, mean=mean, std=std, seed=seed, channels_last=c.channels_last)
        train = DeviceLoader(xtr, ytr, batch_size=c.batch_size, train=True, augment=c.augment,
                             drop_last=c.drop_last, **common)
        test = DeviceLoader(data.test_images, data.test_labels, batch_size=c.test_batch_size, train=False, **common)
    else:
        common = dict(device=device, mean=mean, std=std, seed=seed, channels_last=c.channels_last,
                      num_workers=c.num_workers)
        train = TensorDataLoader(xtr, ytr, batch_size=c.batch_size, train=True, augment=c.augment,
                                 drop_last=c.drop_last, **common)
        test = TensorDataLoader(data.test_images, data.test_labels, batch_size=c.test_batch_size, train=False,
                                **common)
    n_test = len(data.test_labels)
    return DataBundle(
        train=train,
        test=test,
        num_classes=CIFAR_NUM_CLASSES[c.name],
        label=_label(c.label or data.label, len(ytr), n_full, n_test, c.train_subset is not None),
        num_train=len(ytr),
        num_test=n_test,
        classes=list(data.classes),
    )


def _build_imagenet(c: DataCfg, device: torch.device, seed: int, progress: bool) -> DataBundle:
    from .imagenet import load_imagenet, subset_dataset

    ds = load_imagenet(
        c.path,
        c.cache_dir,
        num_classes=c.num_classes,
        augment=c.augment,
        progress=progress,
        validate=_subset_check(c, str(c.path)),
    )
    n_full = len(ds.train)
    if c.train_subset is not None:
        keep = class_balanced_subset(torch.tensor(ds.train.targets), c.train_subset, c.subset_seed)
        subset_dataset(ds.train, keep)
    common = dict(device=device, seed=seed, channels_last=c.channels_last, num_workers=c.num_workers)
    train = FolderDataLoader(ds.train, batch_size=c.batch_size, train=True, drop_last=c.drop_last, **common)
    test = FolderDataLoader(ds.test, batch_size=c.test_batch_size, train=False, **common)
    base = c.label or ("ImageNet" if c.num_classes == 1000 else f"ImageNet-format ({c.num_classes} classes)")
    return DataBundle(
        train=train,
        test=test,
        num_classes=c.num_classes,
        label=_label(base, len(ds.train), n_full, len(ds.test), c.train_subset is not None),
        num_train=len(ds.train),
        num_test=len(ds.test),
        classes=list(ds.classes),
    )
