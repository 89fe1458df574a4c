"""The ``data`` config section (``configs/data/*.yaml``): defaults and checks.

:func:`check_config` checks every key from the config alone -- a path is stat-ed, no data is read
-- so a bad value fails at start-up, before anything is written, with one line naming the key,
the value and what is valid. The checks that need the training set's size
(:func:`check_subset_size`, :func:`check_batch_size`) run here when the config alone tells the
size (torchvision's CIFAR, or a ``train_subset``), otherwise once the data is listed or loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from normmatters import checks

from .datasets import CACHE_DIR, DATASETS, DOWNLOAD_ROOT
from .folder_index import resolve_source

LOADERS = ("device", "dataloader")
DEFAULTS: dict[str, Any] = {
    "path": None,  # None: torchvision's download (CIFAR only)
    "download_root": DOWNLOAD_ROOT,
    "download": True,
    "cache_dir": CACHE_DIR,
    "train_subset": None,
    "subset_seed": 0,
    "batch_size": 128,
    "test_batch_size": None,  # None: same as batch_size
    "loader": "device",
    "num_workers": 0,
    "augment": True,
    "channels_last": False,
    "drop_last": True,
    "num_classes": None,  # imagenet only: expected class count (default 1000)
    "label": None,  # override of the human label's dataset part
}


@dataclass(frozen=True)
class DataCfg:
    name: str
    path: str | None
    download_root: str
    download: bool
    cache_dir: str
    train_subset: int | None
    subset_seed: int
    batch_size: int
    test_batch_size: int
    loader: str
    num_workers: int
    augment: bool
    channels_last: bool
    drop_last: bool
    num_classes: int
    label: str | None


def _get(cfg: Mapping, key: str):
    try:
        value = cfg.get(key, DEFAULTS[key])
    except Exception:  # noqa: BLE001 - e.g. an interpolation that cannot resolve outside the full config
        value = DEFAULTS[key]
    return DEFAULTS[key] if value is None and key in ("download_root", "cache_dir", "drop_last") else value


def _int(cfg: Mapping, key: str, minimum: int, valid: str) -> int:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"data.{key}={value!r} is not valid; valid: {valid}")
    return value


def _bool(cfg: Mapping, key: str) -> bool:
    value = _get(cfg, key)
    checks.boolean(f"data.{key}", value)
    return value


def _choice(key: str, value, options) -> str:
    if not isinstance(value, str) or value.lower() not in options:
        raise ValueError(f"data.{key}={value!r} is not valid; choose one of: {', '.join(options)}")
    return value.lower()


def _path(value) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none")):
        return None
    p = os.path.expanduser(str(value))
    if not os.path.isabs(p):
        try:  # under Hydra, relative paths are relative to the launch directory
            from hydra.core.hydra_config import HydraConfig
            from hydra.utils import to_absolute_path

            if HydraConfig.initialized():
                p = to_absolute_path(p)
        except ImportError:
            pass
    resolve_source(p, "data.path")  # exists, and is a directory or an archive
    return p


def check_config(cfg: Mapping) -> DataCfg:
    """Check the ``data`` section (dict or DictConfig) and return it with the defaults filled in.

    Raises ``ValueError`` (``FileNotFoundError`` for a missing path) with one line naming
    ``data.<key>``, the value and what is valid.
    """
    if cfg is None or not hasattr(cfg, "get"):
        raise ValueError(f"data config must be a mapping, got {type(cfg).__name__}")
    name = _choice("name", cfg.get("name", None), DATASETS)
    spec = DATASETS[name]
    path = _path(_get(cfg, "path"))
    if path is None and spec.download is None:
        raise FileNotFoundError(
            f"data.path is null but torchvision cannot download {spec.display}; set data.path to a directory "
            f"(or .tar/.tar.gz/.tgz archive) with train/<class>/ and val/<class>/ folders"
        )
    batch_size = _int(cfg, "batch_size", 1, "a positive integer")
    test_batch_size = batch_size
    if _get(cfg, "test_batch_size") is not None:
        test_batch_size = _int(cfg, "test_batch_size", 1, "null (= batch_size) or a positive integer")
    train_subset = None
    if _get(cfg, "train_subset") is not None:
        train_subset = _int(cfg, "train_subset", 1, "null or a positive integer")
    loader = _choice("loader", _get(cfg, "loader"), LOADERS)
    num_classes = spec.num_classes
    if name == "imagenet" and _get(cfg, "num_classes") is not None:  # an ImageNet-format subset
        num_classes = _int(cfg, "num_classes", 1, "null (= 1000) or a positive integer")
    label = _get(cfg, "label")
    c = DataCfg(
        name=name,
        path=path,
        download_root=os.path.expanduser(str(_get(cfg, "download_root"))),
        download=_bool(cfg, "download"),
        cache_dir=os.path.expanduser(str(_get(cfg, "cache_dir"))),
        train_subset=train_subset,
        subset_seed=_int(cfg, "subset_seed", 0, "a non-negative integer"),
        batch_size=batch_size,
        test_batch_size=test_batch_size,
        loader="dataloader" if name == "imagenet" else loader,  # ImageNet never fits on the device as uint8
        num_workers=_int(cfg, "num_workers", 0, "a non-negative integer"),
        augment=_bool(cfg, "augment"),
        channels_last=_bool(cfg, "channels_last"),
        drop_last=_bool(cfg, "drop_last"),
        num_classes=num_classes,
        label=None if label is None else str(label),
    )
    if path is None:  # torchvision's download: its size is known
        check_subset_size(c, spec.download_train_size, c.download_root)
    n_train = train_subset or (spec.download_train_size if path is None else None)
    if n_train is not None:
        check_batch_size(c, n_train)
    return c


def check_subset_size(c: DataCfg, n_train: int, where: str) -> None:
    """``data.train_subset`` against the ``n_train`` training images of ``where``."""
    if c.train_subset is not None and c.train_subset > n_train:
        raise ValueError(
            f"data.train_subset={c.train_subset} exceeds the {n_train} training images of {where}; valid: null or 1..{n_train}"
        )


def check_batch_size(c: DataCfg, n_train: int) -> None:
    """``data.batch_size`` against the ``n_train`` training images of an epoch (after the subset)."""
    if c.drop_last and c.batch_size > n_train:
        raise ValueError(
            f"data.batch_size={c.batch_size} is not valid; valid: 1..{n_train}, the training images per epoch "
            f"(with data.drop_last=true a larger batch leaves an epoch without a step)"
        )
