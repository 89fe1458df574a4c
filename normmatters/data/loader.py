"""The standard ``torch.utils.data.DataLoader`` path (per-sample work in worker processes).

* :class:`TensorDataLoader` -- CIFAR from uint8 tensors, for comparison with / benchmarks against
  :class:`~normmatters.data.device_loader.DeviceLoader`. It draws the same per-epoch plan (order,
  crop offsets, flips) from ``(seed, epoch)`` and applies the same augmentation per sample in the
  workers, so both loaders yield identical batches.
* :class:`FolderDataLoader` -- any map-style dataset returning ``(tensor, label)`` (ImageNet's
  ``ImageFolder`` with torchvision transforms). Shuffling and the workers' RNG seeds come from a
  generator seeded by ``(seed, epoch)``, so with ``num_workers > 0`` an epoch is reproducible
  on its own; with ``num_workers == 0`` the transforms draw from the global torch RNG.

Both expose the same interface as ``DeviceLoader``: ``len(loader)``, ``loader.epoch(e)`` yielding
``(x, y)`` already on the device (``x`` float, channels_last if requested; ``y`` int64).
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from .device_loader import EpochPlan, derive_seed, epoch_plan


class _PlanSampler(Sampler):
    """Yields ``(index, dy, dx, flip)`` items from the current plan (set before each epoch)."""

    def __init__(self, n: int):
        self.n = n
        self.plan: EpochPlan | None = None

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        p = self.plan
        assert p is not None, "set sampler.plan before iterating"
        order = p.order.tolist()
        if p.dy is None:
            return iter([(i, -1, -1, False) for i in order])
        return iter(zip(order, p.dy.tolist(), p.dx.tolist(), p.flip.tolist()))


class _AugmentedTensorDataset(Dataset):
    """uint8 C x H x W images; ``ds[(i, dy, dx, flip)]`` -> normalized float image, label."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float], pad: int):
        self.images = images
        self.labels = labels.to(torch.int64)
        c = images.shape[1]
        # Same formula and constants as the device loader: (x - 255*mean) * (1 / (255*std)).
        self.mean255 = torch.tensor([m * 255.0 for m in mean], dtype=torch.float32).view(c, 1, 1)
        self.inv_std255 = torch.tensor([1.0 / (s * 255.0) for s in std], dtype=torch.float32).view(c, 1, 1)
        self.pad = pad

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item):
        i, dy, dx, flip = item
        img = self.images[i]
        if dy >= 0:
            h, w = img.shape[1:]
            p = self.pad
            img = F.pad(img, (p, p, p, p))[:, dy : dy + h, dx : dx + w]  # zero padding, like RandomCrop
            if flip:
                img = img.flip(-1)
        x = (img.to(torch.float32) - self.mean255) * self.inv_std255
        return x, self.labels[i]


class _DeviceTransfer:
    """Shared bits: device transfer, channels_last, ``__iter__`` over successive epochs."""

    device: torch.device
    channels_last: bool
    _iter_epoch: int = 0

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError

    def __iter__(self):
        e = self._iter_epoch
        self._iter_epoch = e + 1
        return self.epoch(e)


class TensorDataLoader(_DeviceTransfer):
    """CIFAR through ``torch.utils.data.DataLoader`` with the device loader's augmentation."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        device: torch.device | str,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        augment: bool = True,
        shuffle: bool | None = None,
        drop_last: bool | None = None,
        seed: int = 0,
        pad: int = 4,
        channels_last: bool = False,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ):
        if int(batch_size) <= 0:
            raise ValueError(f"batch_size={batch_size} must be a positive integer")
        if int(num_workers) < 0:
            raise ValueError(f"num_workers={num_workers} must be >= 0")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.augment = bool(augment) and self.train
        self.shuffle = self.train if shuffle is None else bool(shuffle)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.seed = int(seed)
        self.pad = int(pad)
        self.channels_last = bool(channels_last)
        self.num_samples = len(images)
        self._iter_epoch = 0
        self.dataset = _AugmentedTensorDataset(images.cpu(), labels.cpu(), mean, std, self.pad)
        self.sampler = _PlanSampler(self.num_samples)
        if pin_memory is None:
            pin_memory = self.device.type == "cuda"
        self.loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            drop_last=self.drop_last,
            num_workers=int(num_workers),
            pin_memory=bool(pin_memory),
            persistent_workers=int(num_workers) > 0,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def plan(self, epoch: int) -> EpochPlan:
        return epoch_plan(self.num_samples, self.seed, epoch, shuffle=self.shuffle, augment=self.augment, pad=self.pad)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.plan = self.plan(epoch)
        for x, y in self.loader:
            yield self._to_device(x, y)


class FolderDataLoader(_DeviceTransfer):
    """A map-style dataset (e.g. ``torchvision.datasets.ImageFolder``) through a DataLoader."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        device: torch.device | str,
        train: bool,
        shuffle: bool | None = None,
        drop_last: bool | None = None,
        seed: int = 0,
        channels_last: bool = False,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ):
        if int(batch_size) <= 0:
            raise ValueError(f"batch_size={batch_size} must be a positive integer")
        if int(num_workers) < 0:
            raise ValueError(f"num_workers={num_workers} must be >= 0")
        self.dataset = dataset
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.shuffle = self.train if shuffle is None else bool(shuffle)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.seed = int(seed)
        self.channels_last = bool(channels_last)
        self.num_workers = int(num_workers)
        self.pin_memory = self.device.type == "cuda" if pin_memory is None else bool(pin_memory)
        self.num_samples = len(dataset)  # type: ignore[arg-type]
        self._iter_epoch = 0

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator()
        g.manual_seed(derive_seed(self.seed, epoch, "dataloader"))
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            drop_last=self.drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            generator=g,  # shuffle order and workers' base seed
        )
        for x, y in loader:
            yield self._to_device(x, y)
