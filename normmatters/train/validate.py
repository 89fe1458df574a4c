"""Start-up checks: a bad value fails here, with one line naming it, before any data loads.

Each config group is checked by the package that uses it (``check_config`` beside its code), which
returns it typed; this module checks the training loop's own keys and calls the others, once, in
order. The builders take the typed groups (:class:`Checked`) and check nothing again.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from normmatters import checks, data, models, norms, optim
from normmatters.norms.precision import NARROW_DTYPES

from .build import AUTOCAST, DEVICES
from .known_keys import check_known


def writable_root(path: Path) -> None:
    """The nearest existing ancestor of `path` must be a writable directory."""
    probe = path.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"output directory {str(path)!r} is not writable (checked {str(probe)!r}); set out_root=<a writable dir>")


@dataclass(frozen=True)
class Checked:
    """The config groups the builders take, as their packages checked them."""
    model: models.ModelCfg
    norm: norms.NormCfg
    weight_norm: norms.WeightNormCfg
    data: data.DataCfg
    optim: optim.OptimCfg


def validate(cfg) -> Checked:
    from omegaconf import OmegaConf

    check_known(OmegaConf.to_container(cfg, resolve=False))
    checks.integer("seed", cfg.seed)
    checked = Checked(model=models.check_config(cfg.model),
                      norm=norms.check_config(cfg.norm, cfg.precision),
                      weight_norm=norms.check_weight_norm_config(cfg.weight_norm),
                      data=data.check_config(cfg.data),
                      optim=optim.check_config(cfg.optim, epochs=cfg.train.epochs))
    checks.one_of("precision.autocast", cfg.precision.autocast, AUTOCAST)
    checks.one_of("device", cfg.device, DEVICES)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available; use device=auto or device=cpu")
    checks.integer("train.epochs", cfg.train.epochs, minimum=1)
    checks.integer("train.log_every", cfg.train.log_every, minimum=1)
    checks.integer("train.log_channels_every", cfg.train.get("log_channels_every"), minimum=1, nullable=True)
    checks.boolean("train.sync_norm", cfg.train.get("sync_norm"), nullable=True)
    checks.boolean("train.flush_denormal", cfg.train.get("flush_denormal"), nullable=True)
    checks.boolean("train.stop_on_nonfinite", cfg.train.get("stop_on_nonfinite"), nullable=True)
    checks.boolean("wait_for_lock", cfg.get("wait_for_lock"), nullable=True)
    checks.one_of("train.log_precision", cfg.train.get("log_precision"),
                  (None, *(str(d).removeprefix("torch.") for d in NARROW_DTYPES)))
    if cfg.train.grad_clip is not None:
        checks.number("train.grad_clip", cfg.train.grad_clip, above=0)
    writable_root(Path(cfg.out_root))
    return checked

