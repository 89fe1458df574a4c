"""Normalization layers of "Norm matters" (Lp batch norm, weight norm, BWN) and their registry."""
from __future__ import annotations

import torch.nn as nn

# Temporary minimal registry; the full implementation lives in registry.py.
KINDS = ("l2", "none")


def build_norm(kind: str, num_features: int, **options) -> nn.Module:
    """Return a normalization module for `kind` over `num_features` channels."""
    kind = str(kind).lower()
    if kind == "l2":
        options.pop("dim", None)
        return nn.BatchNorm2d(num_features, **options)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def apply_weight_norm(model: nn.Module, kind: str = "none", **options) -> nn.Module:
    """Apply weight normalization of `kind` to the conv/linear layers of `model` (in place)."""
    if str(kind).lower() == "none":
        return model
    raise ValueError(f"unknown weight-norm kind {kind!r}; valid kinds: none")


__all__ = ["build_norm", "apply_weight_norm", "KINDS"]
