"""The datasets ``data.name`` can name (:data:`DATASETS`, the one list of them) and how each is read.

* CIFAR-10/100 as uint8 tensors N x 3 x 32 x 32: torchvision's pickled release (``path=None``,
  downloaded into ``download_root`` when allowed) or an image folder/archive decoded once and cached
  (:mod:`.image_folder`). Labels follow the sorted class-folder names, which for CIFAR-10/100 is
  torchvision's class order (both are alphabetical).
* ImageNet (or any ImageNet-format folder) through torchvision ``ImageFolder``, decoded on the fly
  by DataLoader workers: ImageNet does not fit in memory as uint8. Train: ``RandomResizedCrop(224)``
  + flip; evaluation: ``Resize(256)`` + ``CenterCrop(224)`` (the paper's ResNet recipe).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torchvision import datasets as tv_datasets
from torchvision import transforms

from .folder_index import SplitIndex, extract_archive, resolve_source, scan_image_folder
from .image_folder import load_image_folder
from .loaders import derive_seed

# Per-channel statistics of the training sets (pixel values in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_SPLITS = {"train": ("train",), "test": ("val", "test")}
DOWNLOAD_ROOT = "~/.cache/normmatters/data"  # torchvision's downloads
CACHE_DIR = "~/.cache/normmatters/cache"  # decoded tensors, extracted archives


@dataclass(frozen=True)
class DatasetSpec:
    display: str  # the dataset part of the human label
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    download: type | None = None  # the torchvision class that downloads it; None: data.path is required
    download_train_size: int | None = None  # training images of that download


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec("CIFAR-10", 10, CIFAR10_MEAN, CIFAR10_STD, tv_datasets.CIFAR10, 50000),
    "cifar100": DatasetSpec("CIFAR-100", 100, CIFAR100_MEAN, CIFAR100_STD, tv_datasets.CIFAR100, 50000),
    "imagenet": DatasetSpec("ImageNet", 1000, IMAGENET_MEAN, IMAGENET_STD),
}

# validate(classes, counts): called once the class names and split sizes are known, before decoding
Validate = Callable[[list[str], dict[str, int]], None]


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


# ----------------------------------------------------------------------------------------------
# CIFAR-10/100: uint8 tensors
# ----------------------------------------------------------------------------------------------


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


def load_cifar(
    name: str,
    path: str | os.PathLike | None = None,
    *,
    download_root: str | os.PathLike = DOWNLOAD_ROOT,
    download: bool = True,
    cache_dir: str | os.PathLike = CACHE_DIR,
    progress: bool = True,
    validate: Validate | None = None,
    workers: int | None = None,
) -> CifarArrays:
    """CIFAR-10/100 as uint8 tensors from torchvision (``path=None``) or from an image folder/archive."""
    spec = DATASETS[name]
    if path is None:
        out = _cifar_torchvision(spec, download_root, download)
        if validate is not None:
            validate(out.classes, {"train": len(out.train_labels), "test": len(out.test_labels)})
        return out
    res = load_image_folder(path, cache_dir, num_classes=spec.num_classes, dataset=spec.display, image_size=(32, 32),
                            validate=validate, progress=progress, workers=workers)
    lossy = any(e in (".jpg", ".jpeg") for e in res.extensions)
    train, test = res.splits["train"], res.splits["test"]
    return CifarArrays(train.images, train.labels, test.images, test.labels, classes=res.classes,
                       label=f"{spec.display} ({'JPEG copy' if lossy else 'image folder'})", source=res.source,
                       from_cache=res.from_cache, seconds=res.seconds)


def _cifar_torchvision(spec: DatasetSpec, root: str | os.PathLike, download: bool) -> CifarArrays:
    t0 = time.perf_counter()
    root = Path(os.path.expanduser(str(root)))
    present = (root / spec.download.base_folder).is_dir()
    if not present and not download:
        raise FileNotFoundError(
            f"{spec.display} not found in data.download_root={str(root)!r} and data.download=false; set "
            f"data.download=true (needs internet) or data.path to an image-folder dir/archive "
            f"(e.g. the JPEG copy ../shared/data/cifar10-jpeg.tar.gz)"
        )
    try:
        train = spec.download(str(root), train=True, download=download and not present)
        test = spec.download(str(root), train=False, download=False)
    except RuntimeError as e:  # "Dataset not found or corrupted"
        raise FileNotFoundError(
            f"{spec.display} in {str(root)!r} is missing or corrupt ({e}); delete it and set data.download=true, "
            f"or set data.path to an image-folder dir/archive"
        ) from None
    except OSError as e:  # no network, DNS failure, ...
        raise FileNotFoundError(
            f"downloading {spec.display} into {str(root)!r} failed ({type(e).__name__}: {e}); without internet "
            f"set data.path to an image-folder dir/archive (e.g. ../shared/data/cifar10-jpeg.tar.gz)"
        ) from None

    def arrays(ds):
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return x, torch.as_tensor(ds.targets, dtype=torch.int64)

    (xtr, ytr), (xte, yte) = arrays(train), arrays(test)
    return CifarArrays(xtr, ytr, xte, yte, classes=list(train.classes), label=spec.display,
                       source=f"torchvision:{root}", from_cache=present, seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------
# ImageNet: torchvision ImageFolder, decoded by the DataLoader workers
# ----------------------------------------------------------------------------------------------


def imagenet_transform(train: bool, augment: bool = True, size: int = 224, resize: int = 256):
    norm = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if train and augment:
        return transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), *norm])
    return transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(size), *norm])


class IndexedImageFolder(tv_datasets.ImageFolder):
    """``ImageFolder`` over an already listed and checked split (no second walk of the tree)."""

    def __init__(self, source: Path, classes: list[str], split: SplitIndex, transform=None):
        self._classes = list(classes)
        self._samples = [(str(source / f), y) for f, y in zip(split.files, split.labels)]
        super().__init__(str(source), transform=transform)

    def find_classes(self, directory):  # noqa: D102 - torchvision hook
        return self._classes, {c: i for i, c in enumerate(self._classes)}

    def make_dataset(self, directory, class_to_idx=None, extensions=None, is_valid_file=None, allow_empty=False):  # noqa: D102
        return list(self._samples)


@dataclass
class ImageNetDatasets:
    train: IndexedImageFolder
    test: IndexedImageFolder
    classes: list[str]
    source: str


def load_imagenet(
    path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    *,
    num_classes: int = 1000,
    augment: bool = True,
    progress: bool = True,
    validate: Validate | None = None,
) -> ImageNetDatasets:
    """List and check the image folder (an archive: from its listing, then extracted once into
    ``cache_dir``) and build the train/val ``ImageFolder`` datasets."""
    source = resolve_source(path)
    if source.is_file():
        scan_image_folder(source, IMAGENET_SPLITS, num_classes, "ImageNet", fingerprint=False, progress=progress)
        source = extract_archive(source, cache_dir, progress=progress)
    index = scan_image_folder(source, IMAGENET_SPLITS, num_classes, "ImageNet", fingerprint=False)
    if validate is not None:
        validate(index.classes, index.counts)
    train = IndexedImageFolder(source, index.classes, index.splits["train"], imagenet_transform(True, augment))
    test = IndexedImageFolder(source, index.classes, index.splits["test"], imagenet_transform(False))
    return ImageNetDatasets(train=train, test=test, classes=index.classes, source=str(source))
