"""The loaders. All share one base, :class:`Loader`: ``len(loader)`` is the number of batches per
epoch, ``loader.epoch(e)`` yields ``(x, y)`` already on the device (``x`` float, channels_last if
asked; ``y`` int64) and iterating the loader itself runs epochs 0, 1, 2, ...

* :class:`DeviceLoader` (CIFAR default, airbench style) keeps the whole uint8 dataset on the
  training device: no host-to-device image copies, no worker processes.
* :class:`TensorDataLoader` does the same per sample in ``torch.utils.data.DataLoader`` workers.
* :class:`FolderDataLoader` wraps any map-style dataset (ImageNet's ``ImageFolder``).

An epoch's *plan* -- sample order, crop offsets (a random crop of the zero-padded image, as
torchvision's ``RandomCrop(32, padding=4)``) and horizontal flips -- is drawn on the CPU from a
generator seeded by ``(seed, epoch)``. The batches therefore depend on nothing else (not the
device, not earlier epochs), so a run resumed at an epoch boundary sees exactly the batches of
the uninterrupted run, and the first two loaders yield identical batches.

Under data parallelism (``rank``, ``world``) the plan is the same on every rank and ``batch_size`` is
the global batch: in training rank r reads the r-th of ``world`` equal slices of each global batch
(the ranks' batches together are exactly the one-process batch); in evaluation whole batches go
round-robin to the ranks.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler


def derive_seed(seed: int, epoch: int, stream: str = "epoch") -> int:
    """A 63-bit seed from ``(seed, epoch)``; distinct inputs give unrelated streams."""
    digest = hashlib.sha256(f"normmatters/{stream}/{int(seed)}/{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class EpochPlan:
    order: torch.Tensor  # (N,) int64: sample index of each position in the epoch
    dy: torch.Tensor | None  # (N,) int64 in [0, 2*pad]: crop offset of position i in the padded image
    dx: torch.Tensor | None
    flip: torch.Tensor | None  # (N,) bool

    def take(self, pos: torch.Tensor | None) -> EpochPlan:
        """The plan of the positions ``pos`` only (one rank's share)."""
        if pos is None:
            return self
        pick = lambda t: None if t is None else t[pos]  # noqa: E731
        return EpochPlan(order=self.order[pos], dy=pick(self.dy), dx=pick(self.dx), flip=pick(self.flip))


def epoch_plan(n: int, seed: int, epoch: int, *, shuffle: bool, augment: bool, pad: int = 4) -> EpochPlan:
    """Draw order, crop offsets and flips of one epoch on the CPU (device independent)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(seed, epoch))
    order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
    if not augment:
        return EpochPlan(order=order, dy=None, dx=None, flip=None)
    offs = torch.randint(0, 2 * pad + 1, (2, n), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    return EpochPlan(order=order, dy=offs[0], dx=offs[1], flip=flip)


def _scale(mean: Sequence[float], std: Sequence[float], shape, dtype=torch.float32, device=None):
    """255*mean and 1/(255*std): both loaders normalize uint8 pixels as (x - 255*mean) * 1/(255*std)."""
    m = torch.tensor([v * 255.0 for v in mean], dtype=dtype, device=device).view(shape)
    s = torch.tensor([1.0 / (v * 255.0) for v in std], dtype=dtype, device=device).view(shape)
    return m, s


class Loader:
    """The base of every loader: the batching arguments, ``len``, iteration over successive epochs."""

    def __init__(self, num_samples: int, *, batch_size: int, device: torch.device | str, train: bool,
                 shuffle: bool | None = None, drop_last: bool | None = None, seed: int = 0,
                 channels_last: bool = False, rank: int = 0, world: int = 1):
        if int(batch_size) <= 0:
            raise ValueError(f"batch_size={batch_size} must be a positive integer")
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.train = bool(train)
        self.shuffle = self.train if shuffle is None else bool(shuffle)  # test: in order, keeps the last batch
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.seed = int(seed)
        self.channels_last = bool(channels_last)
        self._iter_epoch = 0
        self.rank, self.world = int(rank), int(world)
        self.rank_batch = self.batch_size  # what one rank's batch holds (at most)
        if self.world > 1 and self.train:
            if self.batch_size % self.world or not self.drop_last:
                raise ValueError(f"batch_size={batch_size} (the global batch) with drop_last={self.drop_last} cannot be "
                                 f"split over {self.world} processes; valid: a multiple of {self.world} and drop_last=true")
            self.rank_batch = self.batch_size // self.world

    def _global_batches(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        if self.world == 1 or self.train:
            return self._global_batches()
        return len(range(self.rank, self._global_batches(), self.world))

    def positions(self) -> torch.Tensor | None:
        """The positions of an epoch's order that this rank reads, in order (None: all of them)."""
        if self.world == 1:
            return None
        b, B = self.rank_batch, self.batch_size
        if self.train:
            starts = torch.arange(self._global_batches()) * B + self.rank * b
            return (starts[:, None] + torch.arange(b)).reshape(-1)
        batches = range(self.rank, self._global_batches(), self.world)
        empty = torch.zeros(0, dtype=torch.int64)
        return torch.cat([empty] + [torch.arange(i * B, min((i + 1) * B, self.num_samples)) for i in batches])

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        e = self._iter_epoch
        self._iter_epoch += 1
        return self.epoch(e)

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)


# ----------------------------------------------------------------------------------------------
# The whole dataset on the device
# ----------------------------------------------------------------------------------------------


class PixelStore:
    """A uint8 N x H x W x C dataset kept for fast batched gathers of (cropped, flipped) images.

    With augmentation the images are stored zero-padded by ``pad`` and, for C <= 4 channels, with
    each pixel packed into one int32 (channels padded to 4), so a whole batch -- selection, crop
    and flip -- is a single ``index_select`` of B*H*W 4-byte pixels (about 5x faster on CPU than
    advanced indexing of uint8; on CUDA it is one coalesced gather). CIFAR-10 train takes
    50000*40*40*4 B = 320 MB this way; without augmentation the plain NHWC tensor is kept.
    """

    def __init__(self, images_nchw: torch.Tensor, device: torch.device, pad: int, augment: bool):
        n, c, h, w = images_nchw.shape
        self.n, self.c, self.h, self.w, self.pad, self.augment = n, c, h, w, pad, augment
        nhwc = images_nchw.permute(0, 2, 3, 1)
        if not augment:
            self.data = nhwc.contiguous().to(device)
            return
        hp, wp = h + 2 * pad, w + 2 * pad
        self.packed = c <= 4
        padded = torch.zeros(n, hp, wp, 4 if self.packed else c, dtype=torch.uint8, device=device)
        padded[:, pad : pad + h, pad : pad + w, :c] = nhwc.to(device)
        self.data = padded.view(torch.int32).view(-1) if self.packed else padded.view(-1, c)
        self.ar_h = torch.arange(h, device=device)
        self.ar_w = torch.arange(w, device=device)

    def gather(self, idx, dy=None, dx=None, flip=None) -> torch.Tensor:
        """(B, H, W, C) uint8 (possibly a strided view): images ``idx`` cropped at (dy, dx) of the
        zero-padded image and flipped horizontally where ``flip`` -- i.e. torchvision's
        ``RandomCrop(size, padding=pad)`` followed by ``RandomHorizontalFlip``."""
        if not self.augment:
            return self.data[idx]
        h, w = self.h, self.w
        hp, wp = h + 2 * self.pad, w + 2 * self.pad
        rows = dy[:, None] + self.ar_h  # (B, H) rows of the padded image
        cols = dx[:, None] + torch.where(flip[:, None], w - 1 - self.ar_w, self.ar_w)  # (B, W)
        flat = (idx[:, None, None] * hp + rows[:, :, None]) * wp + cols[:, None, :]  # (B, H, W)
        out = self.data.index_select(0, flat.view(-1))
        if self.packed:
            return out.view(torch.uint8).view(len(idx), h, w, 4)[..., : self.c]
        return out.view(len(idx), h, w, self.c)


class DeviceLoader(Loader):
    """Iterate over a uint8 N x C x H x W image tensor kept on ``device``; each batch is one gather
    (selection, crop and flip fused), a cast and the per-channel normalization, all on the device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, device: torch.device | str,
                 mean: Sequence[float], std: Sequence[float], train: bool, augment: bool = True,
                 shuffle: bool | None = None, drop_last: bool | None = None, seed: int = 0, pad: int = 4,
                 channels_last: bool = False, dtype: torch.dtype = torch.float32, rank: int = 0, world: int = 1):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be an N x C x H x W uint8 tensor, got {tuple(images.shape)} {images.dtype}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        super().__init__(len(images), batch_size=batch_size, device=device, train=train, shuffle=shuffle,
                         drop_last=drop_last, seed=seed, channels_last=channels_last, rank=rank, world=world)
        self.augment = bool(augment) and self.train
        self.pad = int(pad)
        self.dtype = dtype
        self.store = PixelStore(images, self.device, self.pad, self.augment)
        self.images = images  # the source as given (not copied); batches come from ``store``
        self.labels = labels.to(torch.int64).to(self.device)
        self.mean255, self.inv_std255 = _scale(mean, std, (1, -1, 1, 1), dtype, self.device)

    def plan(self, epoch: int) -> EpochPlan:
        return epoch_plan(self.num_samples, self.seed, epoch, shuffle=self.shuffle, augment=self.augment, pad=self.pad)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        p = self.plan(epoch).take(self.positions())
        order = p.order.to(self.device, non_blocking=True)
        if p.dy is not None:
            dy, dx, flip = (t.to(self.device, non_blocking=True) for t in (p.dy, p.dx, p.flip))
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        bs = self.rank_batch
        for i in range(len(self)):
            sl = slice(i * bs, (i + 1) * bs)
            idx = order[sl]
            x = self.store.gather(idx) if p.dy is None else self.store.gather(idx, dy[sl], dx[sl], flip[sl])
            # one cast (NHWC -> NCHW or channels_last) and two in-place ops
            x = x.permute(0, 3, 1, 2).to(self.dtype, memory_format=fmt).sub_(self.mean255).mul_(self.inv_std255)
            yield x, self.labels[idx]


# ----------------------------------------------------------------------------------------------
# The torch.utils.data.DataLoader path (per-sample work in worker processes)
# ----------------------------------------------------------------------------------------------


class _PlanSampler(Sampler):
    """Yields ``(index, dy, dx, flip)`` items from the current plan (set before each epoch)."""

    def __init__(self, n: int):
        self.n = n
        self.plan: EpochPlan | None = None

    def __len__(self) -> int:
        return self.n if self.plan is None else len(self.plan.order)

    def __iter__(self):
        p = self.plan
        assert p is not None, "set sampler.plan before iterating"
        order = p.order.tolist()
        if p.dy is None:
            return iter([(i, -1, -1, False) for i in order])
        return iter(zip(order, p.dy.tolist(), p.dx.tolist(), p.flip.tolist()))


class _AugmentedTensorDataset(Dataset):
    """uint8 C x H x W images; ``ds[(i, dy, dx, flip)]`` -> the normalized float image and its label."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float], pad: int):
        self.images = images
        self.labels = labels.to(torch.int64)
        self.mean255, self.inv_std255 = _scale(mean, std, (-1, 1, 1))
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
        return (img.to(torch.float32) - self.mean255) * self.inv_std255, self.labels[i]


class TensorDataLoader(Loader):
    """CIFAR uint8 tensors through ``torch.utils.data.DataLoader``, with the device loader's plan."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, device: torch.device | str,
                 mean: Sequence[float], std: Sequence[float], train: bool, augment: bool = True,
                 shuffle: bool | None = None, drop_last: bool | None = None, seed: int = 0, pad: int = 4,
                 channels_last: bool = False, num_workers: int = 0, pin_memory: bool | None = None,
                 rank: int = 0, world: int = 1):
        super().__init__(len(images), batch_size=batch_size, device=device, train=train, shuffle=shuffle,
                         drop_last=drop_last, seed=seed, channels_last=channels_last, rank=rank, world=world)
        self.augment = bool(augment) and self.train
        self.pad = int(pad)
        self.dataset = _AugmentedTensorDataset(images.cpu(), labels.cpu(), mean, std, self.pad)
        self.sampler = _PlanSampler(self.num_samples)
        self.loader = DataLoader(
            self.dataset,
            batch_size=self.rank_batch,
            sampler=self.sampler,
            drop_last=self.drop_last and self.world == 1,  # a rank's positions are whole batches
            num_workers=int(num_workers),
            pin_memory=self.device.type == "cuda" if pin_memory is None else bool(pin_memory),
            persistent_workers=int(num_workers) > 0,
        )

    def plan(self, epoch: int) -> EpochPlan:
        return epoch_plan(self.num_samples, self.seed, epoch, shuffle=self.shuffle, augment=self.augment, pad=self.pad)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.plan = self.plan(epoch).take(self.positions())
        for x, y in self.loader:
            yield self._to_device(x, y)


class FolderDataLoader(Loader):
    """A map-style dataset returning ``(tensor, label)`` (e.g. ``ImageFolder``) through a DataLoader.

    The order and the workers' RNG seeds come from a generator seeded by ``(seed, epoch)``, so with
    ``num_workers > 0`` an epoch is reproducible on its own; with ``num_workers == 0`` the
    transforms draw from the global torch RNG.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int, device: torch.device | str, train: bool,
                 shuffle: bool | None = None, drop_last: bool | None = None, seed: int = 0,
                 channels_last: bool = False, num_workers: int = 0, pin_memory: bool | None = None,
                 rank: int = 0, world: int = 1):
        super().__init__(len(dataset), batch_size=batch_size, device=device, train=train,  # type: ignore[arg-type]
                         shuffle=shuffle, drop_last=drop_last, seed=seed, channels_last=channels_last,
                         rank=rank, world=world)
        self.dataset = dataset
        self.num_workers = int(num_workers)
        self.pin_memory = self.device.type == "cuda" if pin_memory is None else bool(pin_memory)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator()
        g.manual_seed(derive_seed(self.seed, epoch, "dataloader"))
        order = torch.randperm(self.num_samples, generator=g) if self.shuffle else torch.arange(self.num_samples)
        pos = self.positions()  # the same order on every rank, each reading its positions of it
        loader = DataLoader(self.dataset, batch_size=self.rank_batch, sampler=(order if pos is None else order[pos]).tolist(),
                            drop_last=self.drop_last and self.world == 1, num_workers=self.num_workers,
                            pin_memory=self.pin_memory, generator=g)  # g: also the workers' base seed
        for x, y in loader:
            yield self._to_device(x, y)
