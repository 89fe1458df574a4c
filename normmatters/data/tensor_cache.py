"""The on-disk cache of decoded image tensors: one ``torch.save`` file per (source, splits, size).

The key covers the source's identity, the split names, the image size, the PIL version and
``CACHE_VERSION``, so any change to one of them gets a new file rather than stale tensors.
Files are written atomically, so an interrupted or failed write never leaves a half-written
cache behind; an unreadable or outdated file is treated as a miss.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

from normmatters.runs import atomic_write_bytes

from .source import archive_stem

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def cache_key(identity: dict, wanted: dict[str, tuple[str, ...]], image_size: tuple[int, int]) -> str:
    import PIL

    material = repr(
        (CACHE_VERSION, f"PIL-{PIL.__version__}", sorted(identity.items()), sorted(wanted.items()), tuple(image_size))
    )
    return hashlib.sha256(material.encode()).hexdigest()[:20]


def cache_file_for(path: Path, cache_dir: Path, key: str) -> Path:
    stem = archive_stem(path) if path.is_file() else path.name
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem) or "data"
    return cache_dir / f"{stem}-{key}.pt"


def atomic_torch_save(obj, dest: Path) -> None:
    """``torch.save`` to a temp file next to ``dest``, fsync, then ``os.replace``."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())  # the cache is large and long-lived: make it durable before the rename
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions

    atomic_write_bytes(dest, write)


def load_cache(path: Path) -> dict | None:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - an unreadable cache is rebuilt, not fatal
        log.warning("ignoring unreadable cache file %s (%s: %s); decoding again", path, type(e).__name__, e)
        return None
    if not isinstance(obj, dict) or obj.get("version") != CACHE_VERSION:
        return None
    return obj
