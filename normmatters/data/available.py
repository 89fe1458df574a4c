"""Is a run's data there? Checked once before an experiment plans its runs, so that a machine
without a network stops with one line instead of failing every run in turn.

An image folder or archive (``data.path``, or the ``DATA`` variable the configs read) only has to
exist. torchvision's CIFAR copy is downloaded here, once, when it is missing and ``data.download``
allows it; the runs then find it in ``data.download_root``.
"""
from __future__ import annotations

from pathlib import Path

from .config import check_config
from .datasets import DATASETS

HINT = ("without a network, set DATA to an image-folder copy, e.g. DATA=path/to/cifar10-jpeg.tar.gz make "
        "reproduce-cifar, or give the override data.path=...")


def ensure_data(data_cfg, fetch: bool = True) -> str:
    """One line saying where the data comes from. A missing torchvision copy is downloaded when
    ``fetch`` (a dry run passes False and only says so). Raises FileNotFoundError, one line naming
    DATA, when the data cannot be had."""
    c = check_config(data_cfg)  # a data.path that does not exist fails here
    if c.path is not None:
        return f"data: {c.path}"
    spec = DATASETS[c.name]
    root = Path(c.download_root)
    if (root / spec.download.base_folder).is_dir():
        return f"data: {spec.display} in {root}"
    if not c.download:
        raise FileNotFoundError(f"{spec.display} is not in data.download_root={str(root)!r} and data.download=false; "
                                f"{HINT}")
    if not fetch:
        return f"data: {spec.display} is not in {root} yet; the first run downloads it; {HINT}"
    made = not root.exists()
    try:
        spec.download(str(root), train=True, download=True)
    except (OSError, RuntimeError) as err:  # no network, DNS failure, a corrupt download
        if made and root.is_dir() and not any(root.iterdir()):
            root.rmdir()  # nothing half-written
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise FileNotFoundError(f"{spec.display} is not in {root} and downloading it failed ({reason}); {HINT}") from None
    return f"data: {spec.display} downloaded into {root}"
