"""Reading options from an OmegaConf ``DictConfig`` or a plain ``dict`` alike."""
from __future__ import annotations

from typing import Any

from torch import nn


def cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg[key]`` if present (and not None), else ``default``; works for dicts and DictConfigs."""
    if cfg is None:
        return default
    getter = getattr(cfg, "get", None)
    value = getter(key, default) if callable(getter) else getattr(cfg, key, default)
    return default if value is None else value


def cfg_list(cfg: Any, key: str) -> list:
    """A list option (e.g. ``milestones``) as a plain Python list; absent → ``[]``."""
    value = cfg_get(cfg, key, None)
    if value is None:
        return []
    if isinstance(value, (int, float)):
        return [value]
    return list(value)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under ``torch.compile``'s wrapper (parameter names then carry no ``_orig_mod.``)."""
    return getattr(model, "_orig_mod", model)
