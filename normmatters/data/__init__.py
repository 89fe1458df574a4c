"""Datasets and loaders. The training loop only calls :func:`build_data`::

    data = build_data(cfg.data, device, seed=cfg.seed)
    for epoch in range(start_epoch, epochs):
        for x, y in data.train.epoch(epoch): ...
        for x, y in data.test.epoch(0): ...

Reading order: :mod:`.config` (the ``data`` section, checked before anything is read) ->
:mod:`.datasets` (what each ``data.name`` is and how it is read) -> :mod:`.image_folder` and
:mod:`.folder_index` (an image folder or archive, decoded once and cached) -> :mod:`.loaders`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from torch.utils.data import Subset

from .config import DataCfg, check_batch_size, check_config, check_subset_size
from .datasets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    class_balanced_subset,
    load_cifar,
    load_imagenet,
)
from .loaders import DeviceLoader, FolderDataLoader, Loader, TensorDataLoader, derive_seed, epoch_plan

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DATASETS",
    "DataBundle",
    "DataCfg",
    "DeviceLoader",
    "FolderDataLoader",
    "Loader",
    "TensorDataLoader",
    "build_data",
    "check_config",
    "class_balanced_subset",
    "derive_seed",
    "epoch_plan",
    "load_cifar",
]


@dataclass
class DataBundle:
    train: Loader  # loader.epoch(e) -> (x float on device, y int64 on device); len = batches/epoch
    test: Loader  # no augmentation, no shuffle, keeps the last partial batch
    num_classes: int
    label: str  # e.g. "CIFAR-10 (JPEG copy), train subset 20000/50000, test 10000"
    num_train: int
    num_test: int
    classes: list[str] = field(default_factory=list)


def build_data(cfg, device: torch.device, seed: int, progress: bool = True, rank: int = 0,
               world: int = 1) -> DataBundle:
    """Build train/test loaders for ``cfg`` (a :class:`DataCfg`, or the ``data`` section: see
    ``configs/data/*.yaml``) on ``device``.

    ``seed`` drives the shuffling and augmentation (batches depend only on ``(seed, epoch)``);
    the training subset depends only on ``cfg.subset_seed``, so all arms of an experiment share it.
    With ``world`` > 1 processes, the loaders yield rank ``rank``'s share (``loaders`` module).
    """
    c = cfg if isinstance(cfg, DataCfg) else check_config(cfg)  # a DataCfg was checked at start-up
    device = torch.device(device)
    where = c.path if c.path is not None else c.download_root

    def validate(classes, counts):  # runs after the listing, before any decoding
        check_subset_size(c, counts["train"], where)

    common = dict(device=device, seed=seed, channels_last=c.channels_last, rank=rank, world=world)
    if c.name == "imagenet":
        ds = load_imagenet(c.path, c.cache_dir, num_classes=c.num_classes, augment=c.augment, progress=progress,
                           validate=validate)
        train_set, test_set, classes = ds.train, ds.test, ds.classes
        if c.train_subset is not None:
            keep = class_balanced_subset(torch.tensor(ds.train.targets), c.train_subset, c.subset_seed)
            train_set = Subset(ds.train, keep.tolist())
        check_batch_size(c, len(train_set))
        make = functools.partial(FolderDataLoader, num_workers=c.num_workers, **common)
        train = make(train_set, batch_size=c.batch_size, train=True, drop_last=c.drop_last)
        test = make(test_set, batch_size=c.test_batch_size, train=False)
        base = c.label or ("ImageNet" if c.num_classes == 1000 else f"ImageNet-format ({c.num_classes} classes)")
        n_full = len(ds.train)
    else:
        data = load_cifar(c.name, c.path, download_root=c.download_root, download=c.download, cache_dir=c.cache_dir,
                          progress=progress, validate=validate)
        xtr, ytr, classes = data.train_images, data.train_labels, data.classes
        if c.train_subset is not None:
            keep = class_balanced_subset(ytr, c.train_subset, c.subset_seed)
            xtr, ytr = xtr[keep], ytr[keep]
        check_batch_size(c, len(ytr))  # after decoding, so that a corrupt image is reported first
        spec = DATASETS[c.name]
        make = DeviceLoader if c.loader == "device" else functools.partial(TensorDataLoader, num_workers=c.num_workers)
        make = functools.partial(make, mean=spec.mean, std=spec.std, **common)
        train = make(xtr, ytr, batch_size=c.batch_size, train=True, augment=c.augment, drop_last=c.drop_last)
        test = make(data.test_images, data.test_labels, batch_size=c.test_batch_size, train=False)
        base = c.label or data.label
        n_full = len(data.train_labels)
    split = f"train subset {train.num_samples}/{n_full}" if c.train_subset is not None else f"train {train.num_samples}"
    return DataBundle(
        train=train,
        test=test,
        num_classes=c.num_classes,
        label=f"{base}, {split}, test {test.num_samples}",
        num_train=train.num_samples,
        num_test=test.num_samples,
        classes=list(classes),
    )
