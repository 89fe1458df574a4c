"""Turn a validated config into the objects one training run needs."""
from __future__ import annotations

import torch
from omegaconf import OmegaConf

from normmatters.models import build_model
from normmatters.norms import apply_weight_norm


DEVICES = ("auto", "cpu", "cuda")
AUTOCAST = {None: None, "bfloat16": torch.bfloat16, "float16": torch.float16}  # precision.autocast


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_settings(device: torch.device) -> dict:
    """Process-wide settings of the fast path on this device; returns what meta.json records.
    cuDNN's autotuner: training batches have one shape (drop_last), so it tunes once per layer."""
    if device.type != "cuda":
        return {}
    torch.backends.cudnn.benchmark = True
    return {"cudnn_benchmark": True}


def norm_options(cfg) -> dict:
    """The norm group's options plus the precision group's statistics/accumulator dtypes."""
    options = dict(cfg.norm.options or {})
    if cfg.precision.norm_stats_dtype is not None:
        options["stats_dtype"] = cfg.precision.norm_stats_dtype
    if cfg.precision.norm_accum_dtype is not None:
        options["accum_dtype"] = cfg.precision.norm_accum_dtype
    return options


def model_from_config(cfg, num_classes: int) -> torch.nn.Module:
    model = build_model(cfg.model.name, num_classes, norm=cfg.norm.kind,
                        norm_options=norm_options(cfg), width=cfg.model.width, init=cfg.model.get("init"))
    if cfg.weight_norm.kind != "none":
        apply_weight_norm(model, cfg.weight_norm.kind, exclude=(model.classifier_name,),
                          **dict(cfg.weight_norm.options or {}))
    return model


def optim_config(cfg) -> dict:
    """The optim group plus the number of epochs, which schedules and reference checks need."""
    return {**OmegaConf.to_container(cfg.optim, resolve=True), "epochs": cfg.train.epochs}


def autocast_dtype(cfg):
    return AUTOCAST[cfg.precision.autocast]
