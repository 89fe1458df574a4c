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


def gather_crop_flip(
    images_nhwc: torch.Tensor,
    idx: torch.Tensor,
    dy: torch.Tensor | None,
    dx: torch.Tensor | None,
    flip: torch.Tensor | None,
    pad: int,
) -> torch.Tensor:
    """Select ``images_nhwc[idx]`` and apply crop-with-zero-padding + horizontal flip in one gather.

    ``images_nhwc``: (M, H, W, C) uint8. Output (B, H, W, C). Output pixel (i, j) of sample b is
    padded-image pixel (dy+i, dx+j) -- or (dy+i, dx+W-1-j) when flipped -- i.e. a crop of the
    zero-padded image followed by a horizontal flip, exactly as RandomCrop(pad) + RandomHorizontalFlip.
    """
    if dy is None:
        return images_nhwc[idx]
    _, h, w, _ = images_nhwc.shape
    dev = images_nhwc.device
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = dy[:, None] - pad + ar_h  # (B, H) rows in the unpadded image
    cols_fwd = ar_w.expand(len(idx), w)
    cols = dx[:, None] - pad + torch.where(flip[:, None], w - 1 - cols_fwd, cols_fwd)  # (B, W)
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    x = images_nhwc[idx[:, None, None], rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
    return x * valid[..., None].to(x.dtype)


def normalize_nhwc(x_nhwc: torch.Tensor, mean255: torch.Tensor, inv_std255: torch.Tensor, dtype, channels_last: bool):
    """uint8 (B, H, W, C) -> normalized float (B, C, H, W) (channels_last strides if requested)."""
    x = (x_nhwc.to(dtype) - mean255) * inv_std255  # broadcast over C, stays NHWC-contiguous
    x = x.permute(0, 3, 1, 2)  # a channels_last-strided NCHW view
    return x if channels_last else x.contiguous()


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
        # NHWC on the device: one gather per batch reads whole pixels (C contiguous bytes).
        self.images = images.permute(0, 2, 3, 1).contiguous().to(self.device)
        self.labels = labels.to(torch.int64).to(self.device)
        c = images.shape[1]
        self.mean255 = torch.tensor([m * 255.0 for m in mean], dtype=dtype, device=self.device).view(1, 1, 1, c)
        self.inv_std255 = torch.tensor([1.0 / (s * 255.0) for s in std], dtype=dtype, device=self.device).view(1, 1, 1, c)
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
            x = gather_crop_flip(
                self.images, idx, None if dy is None else dy[sl], None if dx is None else dx[sl],
                None if flip is None else flip[sl], self.pad,
            )
            yield normalize_nhwc(x, self.mean255, self.inv_std255, self.dtype, self.channels_last), self.labels[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        e = self._iter_epoch
        self._iter_epoch += 1
        return self.epoch(e)
