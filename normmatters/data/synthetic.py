"""A tiny CIFAR-shaped image folder of coloured noise, for smoke runs, tests and benchmarks.

Each class has its own colour, so a model can learn it; files are ``train/<class>/NNNN.png`` and
``test/<class>/NNNN.png``, as ``data=image_folder data.path=<root>`` reads them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def make_image_folder(root: Path, train_per_class: int, test_per_class: int, seed: int = 0) -> Path:
    """Write ``train_per_class`` + ``test_per_class`` 32×32 PNGs per CIFAR-10 class under ``root``."""
    from PIL import Image

    if max(train_per_class, test_per_class) > 10_000:
        raise ValueError(f"at most 10000 images per class and split (4-digit names), got "
                         f"train_per_class={train_per_class}, test_per_class={test_per_class}")
    rng = np.random.default_rng(seed)
    palette = rng.integers(30, 225, size=(len(CIFAR10_CLASSES), 3))
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for c, name in enumerate(CIFAR10_CLASSES):
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.clip(palette[c] + rng.normal(0, 40, size=(32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return Path(root)
