"""Decode an image folder (see :mod:`.folder_index`) once into uint8 tensors and cache them in one
file, so later runs load it in a fraction of a second.

The cache file's key covers the source's identity, the split names, the image size, the PIL
version and ``CACHE_VERSION``: any change gets a new file rather than stale tensors. It is written
atomically, so a failed or interrupted decode leaves nothing behind; an unreadable or outdated
file is decoded again.
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from normmatters.io import atomic_write_bytes, remove_stale_temps

from .folder_index import DEFAULT_SPLITS, archive_identity, archive_stem, resolve_source, scan_image_folder

# Callers import decode_images and scan_image_folder from here; tests patch decode_images here.
__all__ = ["DecodedFolder", "DecodedSplit", "cached_file", "decode_images", "load_image_folder", "scan_image_folder"]

log = logging.getLogger(__name__)

CACHE_VERSION = 1
POOL_MIN_IMAGES = 4096  # below this, decode in-process: a pool costs more than it saves


# ----------------------------------------------------------------------------------------------
# Load: from the cache, or decode and cache
# ----------------------------------------------------------------------------------------------


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
    """Decode an image-folder directory/archive into uint8 tensors, or load them from the cache.

    ``validate(classes, counts)`` runs after the (cheap) listing and before the (expensive)
    decoding -- and on a cache hit -- so callers can reject e.g. a too-large subset early.
    Every image must decode to ``image_size`` (H, W).
    """
    t0 = time.perf_counter()
    wanted = dict(splits or DEFAULT_SPLITS)
    source = resolve_source(path)
    # a directory is listed to know its identity; an archive only when its cache is missing
    index = scan_image_folder(source, wanted, num_classes, dataset) if source.is_dir() else None
    identity = index.identity if index is not None else archive_identity(source)
    cache_file = _cache_file(source, cache_dir, identity, wanted, image_size)

    cached = _read_cache(cache_file)
    from_cache = cached is not None
    if from_cache:
        if num_classes is not None and len(cached["classes"]) != num_classes:
            raise ValueError(f"{source}: found {len(cached['classes'])} class folders but {dataset} has {num_classes} classes")
        if validate is not None:
            validate(list(cached["classes"]), {k: len(v["labels"]) for k, v in cached["splits"].items()})
        log.info("loaded %s from cache %s in %.2fs", source.name, cache_file, time.perf_counter() - t0)
    else:
        if index is None:
            index = scan_image_folder(source, wanted, num_classes, dataset, read_bytes=True, progress=progress)
        if validate is not None:
            validate(index.classes, index.counts)
        where = f"{source}/" if index.kind == "dir" else f"{source}!"
        decoded = {}
        for canonical, sp in index.splits.items():
            items = [(f, index.payload[f] if index.payload is not None else str(source / f)) for f in sp.files]
            images = decode_images(items, image_size, where=where, workers=workers, progress=progress,
                                   desc=f"decode {source.name} {sp.folder}")
            decoded[canonical] = {"images": images, "labels": torch.tensor(sp.labels, dtype=torch.int64)}
        index.payload = None  # the archive's bytes are no longer needed
        cached = {"version": CACHE_VERSION, "source": str(source), "identity": dict(identity),
                  "classes": list(index.classes), "extensions": index.extensions, "splits": decoded}
        _write_cache(cached, cache_file)
        log.info("decoded %s (%s) in %.1fs; cached to %s", source.name, index.counts, time.perf_counter() - t0, cache_file)
    return DecodedFolder(
        source=str(source),
        classes=list(cached["classes"]),
        splits={k: DecodedSplit(images=v["images"], labels=v["labels"]) for k, v in cached["splits"].items()},
        extensions=list(cached.get("extensions", [])),
        cache_file=cache_file,
        from_cache=from_cache,
        seconds=time.perf_counter() - t0,
    )


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
    identity = scan_image_folder(source, wanted).identity if source.is_dir() else archive_identity(source)
    f = _cache_file(source, cache_dir, identity, wanted, image_size)
    return f if f.is_file() else None


# ----------------------------------------------------------------------------------------------
# The cache file
# ----------------------------------------------------------------------------------------------


def _cache_file(source: Path, cache_dir, identity: dict, wanted: dict, image_size) -> Path:
    import PIL  # its version is in the key: another decoder may give other pixels

    material = (CACHE_VERSION, f"PIL-{PIL.__version__}", sorted(identity.items()), sorted(wanted.items()),
                tuple(image_size))
    key = hashlib.sha256(repr(material).encode()).hexdigest()[:20]
    stem = archive_stem(source) if source.is_file() else source.name
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem) or "data"
    return Path(os.path.expanduser(str(cache_dir))) / f"{stem}-{key}.pt"


STALE_S = 60.0  # a temp file older than this that no writer holds is a killed writer's leftover


def _read_cache(path: Path) -> dict | None:
    """The cached dict, or None when absent, unreadable or of another ``CACHE_VERSION`` (then decode again).
    Temp files that killed writers left in the cache directory are removed first."""
    remove_stale_temps(path.parent, min_age_s=STALE_S)
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - an unreadable cache is rebuilt, not fatal
        log.warning("ignoring unreadable cache file %s (%s: %s); decoding again", path, type(e).__name__, e)
        return None
    return obj if isinstance(obj, dict) and obj.get("version") == CACHE_VERSION else None


def _write_cache(obj: dict, path: Path) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    atomic_write_bytes(path, write)  # temp file + rename: a failed write leaves nothing behind


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------


def _decode_chunk(args) -> tuple[np.ndarray | None, tuple[str, str] | None]:
    """(array K x H x W x 3, None), or (None, (name, reason)) for the first unreadable image.
    Module-level so that it pickles into pool workers."""
    from PIL import Image

    items, hw = args
    out = np.empty((len(items), hw[0], hw[1], 3), dtype=np.uint8)
    for i, (name, data) in enumerate(items):
        try:
            with Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data) as im:
                arr = np.asarray(im.convert("RGB"))
        except Exception as e:  # noqa: BLE001 - any decoder failure means "corrupt image"
            if type(e).__name__ == "UnidentifiedImageError":
                return None, (name, "not a recognizable image file")
            return None, (name, f"{type(e).__name__}: {e}")
        if arr.shape[:2] != tuple(hw):
            return None, (name, f"image is {arr.shape[1]}x{arr.shape[0]}, expected {hw[1]}x{hw[0]}")
        out[i] = arr
    return out, None


def decode_images(
    items: Sequence[tuple[str, bytes | str]],
    image_size: tuple[int, int],
    *,
    where: str = "",
    workers: int | None = None,
    progress: bool = True,
    desc: str = "decode",
    chunk_size: int = 512,
) -> torch.Tensor:
    """Decode (name, bytes or file path) items with PIL into an N x 3 x H x W uint8 tensor.

    ``workers``: pool processes (None: all cores from ``POOL_MIN_IMAGES`` images on, else
    in-process; 0/1: in-process). Grayscale/RGBA become RGB; a ``ValueError`` names the first
    corrupt or wrongly sized image.
    """
    from tqdm.auto import tqdm

    hw = (int(image_size[0]), int(image_size[1]))
    if workers is None:
        workers = (os.cpu_count() or 1) if len(items) >= POOL_MIN_IMAGES else 0
    out = np.empty((len(items), hw[0], hw[1], 3), dtype=np.uint8)
    chunks = [(list(items[i : i + chunk_size]), hw) for i in range(0, len(items), chunk_size)]
    pool = None
    try:
        if workers > 1 and len(chunks) > 1:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
            pool = ctx.Pool(min(workers, len(chunks)))
            results = pool.imap(_decode_chunk, chunks)
        else:
            results = map(_decode_chunk, chunks)
        with tqdm(total=len(items), desc=desc, unit=" img", disable=not progress, leave=False) as bar:
            pos = 0
            for arr, err in results:
                if err is not None:
                    raise ValueError(f"corrupt or unreadable image {where}{err[0]} ({err[1]})")
                out[pos : pos + len(arr)] = arr
                pos += len(arr)
                bar.update(len(arr))
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
