"""The ``data`` config section: defaults and validation, cheap and before any data is read."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

DATASETS = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
LOADERS = ("device", "dataloader")
DEFAULTS: dict[str, Any] = {
    "path": None,
    "download_root": "~/.cache/normmatters/data",
    "download": True,
    "cache_dir": "~/.cache/normmatters/cache",
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


def _get(cfg: Mapping, key: str):
    try:
        value = cfg.get(key, DEFAULTS[key])
    except Exception:  # noqa: BLE001 - e.g. an unresolvable interpolation in a DictConfig
        value = DEFAULTS[key]
    return DEFAULTS[key] if value is None and key in ("download_root", "cache_dir") else value


def _as_int(key: str, value, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"data.{key}={value!r} is invalid; valid: {what}")
    try:
        v = int(value)
    except ValueError:
        raise ValueError(f"data.{key}={value!r} is invalid; valid: {what}") from None
    if v < minimum:
        raise ValueError(f"data.{key}={value!r} is invalid; valid: {what}")
    return v


def _as_bool(key: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"data.{key}={value!r} is invalid; valid: true or false")


def _resolve_path(p) -> str | None:
    if p is None or (isinstance(p, str) and p.strip().lower() in ("", "null", "none")):
        return None
    p = os.path.expanduser(str(p))
    if not os.path.isabs(p):
        try:  # under Hydra, relative paths are relative to the launch directory
            from hydra.core.hydra_config import HydraConfig
            from hydra.utils import to_absolute_path

            if HydraConfig.initialized():
                p = to_absolute_path(p)
        except Exception:  # noqa: BLE001 - Hydra absent or not running
            pass
    return p


@dataclass
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


def parse_data_cfg(cfg: Mapping) -> DataCfg:
    """Validate ``cfg`` (dict or DictConfig); raises ``ValueError`` with one line per problem."""
    if cfg is None or not hasattr(cfg, "get"):
        raise ValueError(f"data config must be a mapping, got {type(cfg).__name__}")
    name = cfg.get("name", None)
    if not isinstance(name, str) or name.lower() not in DATASETS:
        raise ValueError(f"data.name={name!r} is not supported; valid: {', '.join(DATASETS)}")
    name = name.lower()
    batch_size = _as_int("batch_size", _get(cfg, "batch_size"), 1, "a positive integer")
    tbs = _get(cfg, "test_batch_size")
    test_batch_size = batch_size if tbs is None else _as_int("test_batch_size", tbs, 1, "a positive integer")
    subset = _get(cfg, "train_subset")
    train_subset = None if subset is None else _as_int("train_subset", subset, 1, "null or a positive integer")
    loader = str(_get(cfg, "loader")).lower()
    if loader not in LOADERS:
        raise ValueError(f"data.loader={_get(cfg, 'loader')!r} is not supported; valid: {', '.join(LOADERS)}")
    if name == "imagenet":
        loader = "dataloader"  # ImageNet never fits on the device as uint8
    num_classes = DATASETS[name]
    if name == "imagenet" and _get(cfg, "num_classes") is not None:
        num_classes = _as_int("num_classes", _get(cfg, "num_classes"), 1, "a positive integer")
    drop_last = _get(cfg, "drop_last")
    return DataCfg(
        name=name,
        path=_resolve_path(_get(cfg, "path")),
        download_root=os.path.expanduser(str(_get(cfg, "download_root"))),
        download=_as_bool("download", _get(cfg, "download")),
        cache_dir=os.path.expanduser(str(_get(cfg, "cache_dir"))),
        train_subset=train_subset,
        subset_seed=_as_int("subset_seed", _get(cfg, "subset_seed"), 0, "a non-negative integer"),
        batch_size=batch_size,
        test_batch_size=test_batch_size,
        loader=loader,
        num_workers=_as_int("num_workers", _get(cfg, "num_workers"), 0, "a non-negative integer"),
        augment=_as_bool("augment", _get(cfg, "augment")),
        channels_last=_as_bool("channels_last", _get(cfg, "channels_last")),
        drop_last=True if drop_last is None else _as_bool("drop_last", drop_last),
        num_classes=num_classes,
        label=_get(cfg, "label"),
    )
