"""CIFAR-10 / CIFAR-100 as uint8 tensors: N x 3 x 32 x 32 images and int64 labels.

Two sources:
* ``path=None``: torchvision's pickled release, downloaded into ``download_root`` when allowed;
* ``path=<dir or archive>``: an image-folder tree ``train/<class>/*``, ``test/<class>/*`` (e.g. the
  JPEG copy of CIFAR-10), decoded once and cached by :mod:`normmatters.data.image_folder`.

Labels follow the sorted class-folder names; for CIFAR-10/100 that equals torchvision's class
order (both class lists are alphabetical).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .image_folder import load_image_folder

# Per-channel statistics of the training sets (pixel values in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

CIFAR_STATS = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "cifar100": (CIFAR100_MEAN, CIFAR100_STD)}
CIFAR_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
CIFAR_DISPLAY = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
_TV_FOLDER = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


@dataclass
class CifarArrays:
    train_images: torch.Tensor  # N x 3 x 32 x 32 uint8
    train_labels: torch.Tensor  # N int64
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    label: str  # "CIFAR-10", "CIFAR-10 (JPEG copy)", "CIFAR-100 (image folder)", ...
    source: str
    from_cache: bool
    seconds: float


def _check_name(name: str) -> None:
    if name not in CIFAR_NUM_CLASSES:
        raise ValueError(f"data.name={name!r} is not a CIFAR dataset; valid: {', '.join(CIFAR_NUM_CLASSES)}")


def load_cifar_torchvision(name: str, root: str | os.PathLike, download: bool) -> CifarArrays:
    """Load torchvision's CIFAR release from ``root``, downloading it first if allowed."""
    import torchvision

    _check_name(name)
    t0 = time.perf_counter()
    root = Path(os.path.expanduser(str(root)))
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    display = CIFAR_DISPLAY[name]
    present = (root / _TV_FOLDER[name]).is_dir()
    if not present and not download:
        raise FileNotFoundError(
            f"{display} not found in data.download_root={str(root)!r} and data.download=false; set "
            f"data.download=true (needs internet) or data.path to an image-folder dir/archive "
            f"(e.g. the JPEG copy ../shared/data/cifar10-jpeg.tar.gz)"
        )
    try:
        train = cls(str(root), train=True, download=download and not present)
        test = cls(str(root), train=False, download=False)
    except RuntimeError as e:  # "Dataset not found or corrupted"
        raise FileNotFoundError(
            f"{display} in {str(root)!r} is missing or corrupt ({e}); delete it and set data.download=true, "
            f"or set data.path to an image-folder dir/archive"
        ) from None
    except OSError as e:  # no network, DNS failure, ...
        raise FileNotFoundError(
            f"downloading {display} into {str(root)!r} failed ({type(e).__name__}: {e}); without internet "
            f"set data.path to an image-folder dir/archive (e.g. ../shared/data/cifar10-jpeg.tar.gz)"
        ) from None

    def arrays(ds):
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        y = torch.as_tensor(ds.targets, dtype=torch.int64)
        return x, y

    xtr, ytr = arrays(train)
    xte, yte = arrays(test)
    return CifarArrays(
        train_images=xtr,
        train_labels=ytr,
        test_images=xte,
        test_labels=yte,
        classes=list(train.classes),
        label=display,
        source=f"torchvision:{root}",
        from_cache=present,
        seconds=time.perf_counter() - t0,
    )


def load_cifar_folder(
    name: str,
    path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    *,
    progress: bool = True,
    validate: Callable[[list[str], dict[str, int]], None] | None = None,
    workers: int | None = None,
) -> CifarArrays:
    """Load CIFAR from an image-folder directory or archive (``train/`` and ``test/`` or ``val/``)."""
    _check_name(name)
    res = load_image_folder(
        path,
        cache_dir,
        num_classes=CIFAR_NUM_CLASSES[name],
        dataset=CIFAR_DISPLAY[name],
        image_size=(32, 32),
        validate=validate,
        progress=progress,
        workers=workers,
    )
    lossy = any(e in (".jpg", ".jpeg") for e in res.extensions)
    label = f"{CIFAR_DISPLAY[name]} ({'JPEG copy' if lossy else 'image folder'})"
    return CifarArrays(
        train_images=res.splits["train"].images,
        train_labels=res.splits["train"].labels,
        test_images=res.splits["test"].images,
        test_labels=res.splits["test"].labels,
        classes=res.classes,
        label=label,
        source=res.source,
        from_cache=res.from_cache,
        seconds=res.seconds,
    )


def load_cifar(
    name: str,
    path: str | os.PathLike | None = None,
    *,
    download_root: str | os.PathLike = "~/.cache/normmatters/data",
    download: bool = True,
    cache_dir: str | os.PathLike = "~/.cache/normmatters/cache",
    progress: bool = True,
    validate: Callable[[list[str], dict[str, int]], None] | None = None,
    workers: int | None = None,
) -> CifarArrays:
    """CIFAR-10/100 as uint8 tensors from torchvision (``path=None``) or from an image folder."""
    _check_name(name)
    if path is None:
        out = load_cifar_torchvision(name, download_root, download)
        if validate is not None:
            validate(out.classes, {"train": len(out.train_labels), "test": len(out.test_labels)})
        return out
    return load_cifar_folder(name, path, cache_dir, progress=progress, validate=validate, workers=workers)
