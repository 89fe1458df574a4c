"""A data loader that keeps the whole uint8 dataset on the training device (airbench style).

Per epoch a *plan* is drawn on the CPU from a generator seeded by ``(seed, epoch)``: the sample
order, the crop offsets (random crop with zero padding ``pad``, as torchvision's
``RandomCrop(32, padding=4)``) and the horizontal flips. The plan is moved to the device once and
each batch is then produced with a single gather (crop + flip fused), a cast and the per-channel
normalization. So:

* no host->device copies of images during training, no worker processes;
* the batches depend only on ``(seed, epoch)`` -- not on the device, on earlier epochs or on
  how many epochs ran in this process -- so a run resumed at an epoch boundary sees exactly the
  batches the uninterrupted run would have seen.

:class:`normmatters.data.loader.TensorDataLoader` draws the same plan and applies the same
augmentation per sample in ``torch.utils.data.DataLoader`` workers (the standard path), which
makes the two loaders produce identical batches (used as a test and for benchmarks).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch


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
        cs = 4 if self.packed else c
        padded = torch.zeros(n, hp, wp, cs, dtype=torch.uint8, device=device)
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
        b = len(idx)
        if self.packed:
            return out.view(torch.uint8).view(b, h, w, 4)[..., : self.c]
        return out.view(b, h, w, self.c)


def normalize_nhwc(x_nhwc: torch.Tensor, mean255: torch.Tensor, inv_std255: torch.Tensor, dtype, channels_last: bool):
    """uint8 (B, H, W, C) -> float (B, C, H, W) = (x - 255*mean) * 1/(255*std), in one cast + 2 in-place ops.

    ``mean255``/``inv_std255`` have shape (1, C, 1, 1). Output is NCHW-contiguous, or channels_last.
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x_nhwc.permute(0, 3, 1, 2).to(dtype, memory_format=fmt)
    return x.sub_(mean255).mul_(inv_std255)


class DeviceLoader:
    """Iterate over a uint8 image tensor kept on ``device``; see the module docstring.

    ``loader.epoch(e)`` yields ``(x, y)``: ``x`` float (B, C, H, W) normalized on the device,
    ``y`` int64. ``len(loader)`` is the number of batches per epoch. Iterating the loader itself
    (``for x, y in loader``) runs epoch 0, 1, 2, ... on successive iterations.
    """

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
        dtype: torch.dtype = torch.float32,
    ):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be an N x C x H x W uint8 tensor, got {tuple(images.shape)} {images.dtype}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if int(batch_size) <= 0:
            raise ValueError(f"batch_size={batch_size} must be a positive integer")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.augment = bool(augment) and self.train
        self.shuffle = self.train if shuffle is None else bool(shuffle)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.seed = int(seed)
        self.pad = int(pad)
        self.channels_last = bool(channels_last)
        self.dtype = dtype
        self.num_samples = len(images)
        self.store = PixelStore(images, self.device, self.pad, self.augment)
        self.images = images  # the uint8 N x C x H x W source as given (not copied); batches come from ``store``
        self.labels = labels.to(torch.int64).to(self.device)
        c = images.shape[1]
        self.mean255 = torch.tensor([m * 255.0 for m in mean], dtype=dtype, device=self.device).view(1, c, 1, 1)
        self.inv_std255 = torch.tensor([1.0 / (s * 255.0) for s in std], dtype=dtype, device=self.device).view(1, c, 1, 1)
        self._iter_epoch = 0

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def plan(self, epoch: int) -> EpochPlan:
        return epoch_plan(self.num_samples, self.seed, epoch, shuffle=self.shuffle, augment=self.augment, pad=self.pad)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        p = self.plan(epoch)
        order = p.order.to(self.device, non_blocking=True)
        dy = dx = flip = None
        if p.dy is not None:
            dy, dx, flip = (t.to(self.device, non_blocking=True) for t in (p.dy, p.dx, p.flip))
        bs = self.batch_size
        for i in range(len(self)):
            sl = slice(i * bs, (i + 1) * bs)
            idx = order[sl]
            if dy is None:
                x = self.store.gather(idx)
            else:
                x = self.store.gather(idx, dy[sl], dx[sl], flip[sl])
            yield normalize_nhwc(x, self.mean255, self.inv_std255, self.dtype, self.channels_last), self.labels[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        e = self._iter_epoch
        self._iter_epoch += 1
        return self.epoch(e)
