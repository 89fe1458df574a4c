"""ImageNet (or any large image-folder dataset) through torchvision ``ImageFolder`` + DataLoader.

Train: ``RandomResizedCrop(224)`` + ``RandomHorizontalFlip`` + normalization; evaluation:
``Resize(256)`` + ``CenterCrop(224)`` + normalization (the standard ResNet recipe used by the
paper). ``path`` is a directory with ``train/`` and ``val/`` (or ``test/``) class folders, or a
.tar/.tar.gz/.tgz archive of one, which is extracted once into the cache dir. Images are decoded
on the fly in the DataLoader workers (no tensor cache: ImageNet does not fit in memory as uint8).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torchvision import transforms
from torchvision.datasets import ImageFolder

from .folder_index import FolderIndex, SplitIndex, scan_image_folder
from .source import extract_archive, is_archive, resolve_source

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_SPLITS = {"train": ("train",), "test": ("val", "test")}


def imagenet_transform(train: bool, augment: bool = True, size: int = 224, resize: int = 256):
    norm = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if train and augment:
        return transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), *norm])
    return transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(size), *norm])


class IndexedImageFolder(ImageFolder):
    """``ImageFolder`` over an already scanned and validated split (no second directory walk)."""

    def __init__(self, root: Path, classes: list[str], split: SplitIndex, transform=None, prefix: str = ""):
        self._classes = list(classes)
        self._samples = [(str(root / f[len(prefix):]), y) for f, y in zip(split.files, split.labels)]
        super().__init__(str(root), transform=transform)

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
    path: str | os.PathLike | None,
    cache_dir: str | os.PathLike,
    *,
    num_classes: int = 1000,
    augment: bool = True,
    progress: bool = True,
    validate: Callable[[list[str], dict[str, int]], None] | None = None,
) -> ImageNetDatasets:
    """Scan/validate the image folder (extracting an archive once), build train/val ImageFolders."""
    if path is None:
        raise FileNotFoundError(
            "data.path is null but torchvision cannot download ImageNet; set data.path to a directory "
            "(or .tar/.tar.gz/.tgz archive) with train/<class>/ and val/<class>/ folders"
        )
    source = resolve_source(path)
    if is_archive(source):
        # Validate the layout from the archive listing before extracting anything.
        scan_image_folder(source, IMAGENET_SPLITS, num_classes, "ImageNet", fingerprint=False, progress=progress)
        source = extract_archive(source, cache_dir, progress=progress)
    index: FolderIndex = scan_image_folder(source, IMAGENET_SPLITS, num_classes, "ImageNet", fingerprint=False)
    if validate is not None:
        validate(index.classes, index.counts)
    base = source / index.root if index.root else source
    prefix = f"{index.root}/" if index.root else ""
    train = IndexedImageFolder(base, index.classes, index.splits["train"], imagenet_transform(True, augment), prefix)
    test = IndexedImageFolder(base, index.classes, index.splits["test"], imagenet_transform(False), prefix)
    return ImageNetDatasets(train=train, test=test, classes=index.classes, source=str(source))


def subset_dataset(dataset: ImageFolder, indices: torch.Tensor) -> ImageFolder:
    """Restrict an ImageFolder to ``indices`` in place (keeps ``samples``/``targets`` consistent)."""
    keep = indices.tolist()
    dataset.samples = [dataset.samples[i] for i in keep]
    dataset.imgs = dataset.samples
    dataset.targets = [s[1] for s in dataset.samples]
    return dataset
