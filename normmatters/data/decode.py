"""Decode images (bytes or file paths) with PIL into one N x 3 x H x W uint8 tensor, in a process pool."""

from __future__ import annotations

import io
import multiprocessing as mp
import os
from typing import Sequence

import numpy as np
import torch

# Below this many images, decoding runs in the calling process (a pool costs more than it saves).
POOL_MIN_IMAGES = 4096


def _decode_chunk(args) -> tuple[np.ndarray | None, tuple[str, str] | None]:
    """Decode a chunk of (name, bytes-or-path) items into one K x H x W x 3 uint8 array.

    Returns ``(array, None)`` or ``(None, (name, reason))`` for the first unreadable image.
    Module-level so that it pickles into pool workers.
    """
    from PIL import Image

    items, hw = args
    out = np.empty((len(items), hw[0], hw[1], 3), dtype=np.uint8)
    for i, (name, data) in enumerate(items):
        try:
            src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
            with Image.open(src) as im:
                im = im.convert("RGB")
                arr = np.asarray(im)
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
    """Decode images (bytes or file paths) with PIL into an N x 3 x H x W uint8 tensor.

    ``workers``: processes for a multiprocessing pool (None: all CPU cores when there are at least
    ``POOL_MIN_IMAGES`` images, else in-process; 0/1: in-process). Raises ``ValueError`` naming
    the first corrupt/unreadable or wrongly-sized image.
    """
    from tqdm.auto import tqdm

    n = len(items)
    hw = (int(image_size[0]), int(image_size[1]))
    if workers is None:
        workers = (os.cpu_count() or 1) if n >= POOL_MIN_IMAGES else 0
    out = np.empty((n, hw[0], hw[1], 3), dtype=np.uint8)
    chunks = [(list(items[i : i + chunk_size]), hw) for i in range(0, n, chunk_size)]
    pool = None
    try:
        if workers > 1 and len(chunks) > 1:
            methods = mp.get_all_start_methods()
            ctx = mp.get_context("fork" if "fork" in methods else None)
            pool = ctx.Pool(min(workers, len(chunks)))
            results = pool.imap(_decode_chunk, chunks)
        else:
            results = map(_decode_chunk, chunks)
        with tqdm(total=n, desc=desc, unit=" img", disable=not progress, leave=False) as bar:
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
