"""Read an image-folder tree (or a .tar / .tar.gz / .tgz archive of one), decode it once into
uint8 tensors and cache the result as a single tensor file.

Listing and validation live in :mod:`.folder_index`, decoding in :mod:`.decode` and the cache
file (keying, atomic writes) in :mod:`.tensor_cache`; this module ties them together.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .decode import decode_images
from .folder_index import DEFAULT_SPLITS, FolderIndex, scan_image_folder
from .source import archive_identity, resolve_source
from .tensor_cache import CACHE_VERSION, atomic_torch_save, cache_file_for, cache_key, load_cache

# Callers import decode_images and scan_image_folder from here; tests patch decode_images here.
__all__ = ["DecodedFolder", "DecodedSplit", "cached_file", "decode_images", "load_image_folder", "scan_image_folder"]

log = logging.getLogger(__name__)


@dataclass
class DecodedSplit:
    images: torch.Tensor  # N x 3 x H x W uint8
    labels: torch.Tensor  # N int64


@dataclass
class DecodedFolder:
    source: str
    classes: list[str]
    splits: dict[str, DecodedSplit]
    extensions: list[str]
    cache_file: Path | None
    from_cache: bool
    seconds: float  # wall time of this load (decode + cache write, or cache read)


def cached_file(
    path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    *,
    splits: dict[str, tuple[str, ...]] | None = None,
    image_size: tuple[int, int] = (32, 32),
) -> Path | None:
    """The cache file that :func:`load_image_folder` would use for ``path``, if it exists."""
    wanted = dict(splits or DEFAULT_SPLITS)
    source = resolve_source(path)
    if source.is_dir():
        identity = scan_image_folder(source, wanted).identity
    else:
        identity = archive_identity(source)
    f = cache_file_for(source, Path(os.path.expanduser(str(cache_dir))), cache_key(identity, wanted, image_size))
    return f if f.is_file() else None


def load_image_folder(
    path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    *,
    splits: dict[str, tuple[str, ...]] | None = None,
    num_classes: int | None = None,
    dataset: str = "the dataset",
    image_size: tuple[int, int] = (32, 32),
    validate: Callable[[list[str], dict[str, int]], None] | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> DecodedFolder:
    """Decode an image-folder directory/archive into uint8 tensors, using/creating a cache file.

    ``validate(classes, counts)`` runs after the (cheap) listing and before the (expensive)
    decoding -- and also on a cache hit -- so callers can reject e.g. a too-large subset early.
    Every image must decode to ``image_size`` (H, W); grayscale/RGBA images are converted to RGB.
    """
    t0 = time.perf_counter()
    wanted = dict(splits or DEFAULT_SPLITS)
    source = resolve_source(path)
    cache_dir = Path(os.path.expanduser(str(cache_dir)))

    index: FolderIndex | None = None
    if source.is_dir():
        index = scan_image_folder(source, wanted, num_classes, dataset)
        identity = index.identity
    else:
        identity = archive_identity(source)
    cache_file = cache_file_for(source, cache_dir, cache_key(identity, wanted, image_size))

    cached = load_cache(cache_file) if cache_file.is_file() else None
    if cached is not None:
        classes = list(cached["classes"])
        where = f"{source}"
        if num_classes is not None and len(classes) != num_classes:
            raise ValueError(
                f"{where}: found {len(classes)} class folders but {dataset} has {num_classes} classes"
            )
        dsplits = {
            k: DecodedSplit(images=v["images"], labels=v["labels"]) for k, v in cached["splits"].items()
        }
        if validate is not None:
            validate(classes, {k: len(v.labels) for k, v in dsplits.items()})
        dt = time.perf_counter() - t0
        log.info("loaded %s from cache %s in %.2fs", source.name, cache_file, dt)
        return DecodedFolder(
            source=str(source),
            classes=classes,
            splits=dsplits,
            extensions=list(cached.get("extensions", [])),
            cache_file=cache_file,
            from_cache=True,
            seconds=dt,
        )

    if index is None:
        index = scan_image_folder(source, wanted, num_classes, dataset, read_bytes=True, progress=progress)
    if validate is not None:
        validate(index.classes, index.counts)

    base = source / index.root if (source.is_dir() and index.root) else source
    dsplits = {}
    for canonical, sp in index.splits.items():
        if index.kind == "dir":
            prefix = f"{index.root}/" if index.root else ""
            items = [(f, str(base / f[len(prefix):])) for f in sp.files]
        else:
            assert index.payload is not None
            items = [(f, index.payload[f]) for f in sp.files]
        where = f"{source}/" if index.kind == "dir" else f"{source}!"
        images = decode_images(
            items,
            image_size,
            where=where,
            workers=workers,
            progress=progress,
            desc=f"decode {source.name} {sp.folder}",
        )
        dsplits[canonical] = DecodedSplit(images=images, labels=torch.tensor(sp.labels, dtype=torch.int64))
    index.payload = None

    obj = {
        "version": CACHE_VERSION,
        "source": str(source),
        "identity": {k: v for k, v in identity.items()},
        "classes": list(index.classes),
        "extensions": index.extensions,
        "splits": {k: {"images": v.images, "labels": v.labels} for k, v in dsplits.items()},
    }
    atomic_torch_save(obj, cache_file)
    dt = time.perf_counter() - t0
    log.info("decoded %s (%s) in %.1fs; cached to %s", source.name, index.counts, dt, cache_file)
    return DecodedFolder(
        source=str(source),
        classes=list(index.classes),
        splits=dsplits,
        extensions=index.extensions,
        cache_file=cache_file,
        from_cache=False,
        seconds=dt,
    )
