"""Turn a validated config into the objects one training run needs: the builders take the typed
groups start-up checked (``validate``) and check nothing again."""
from __future__ import annotations

import torch

from normmatters.models import ModelCfg, build_model
from normmatters.norms import NormCfg, WeightNormCfg, apply_weight_norm


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


def model_from_config(model: ModelCfg, norm: NormCfg, weight_norm: WeightNormCfg, num_classes: int) -> torch.nn.Module:
    net = build_model(model.name, num_classes, norm=norm.kind, norm_options=norm.options, width=model.width,
                      init=model.init)
    if weight_norm.kind != "none":
        apply_weight_norm(net, weight_norm.kind, exclude=(net.classifier_name,), **weight_norm.options)
    return net


def autocast_dtype(cfg):
    return AUTOCAST[cfg.precision.autocast]
