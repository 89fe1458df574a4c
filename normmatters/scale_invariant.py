"""Which weights of a model are scale-invariant (PAPER.md §1): the one definition that optimization
(who gets which LR and weight decay) and the dynamics (whose norms are logged) share."""
from __future__ import annotations

from torch import nn


def scale_invariant_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Conv/linear weights (and weight-norm directions) outside the classifier.

    A parameter qualifies when it has >= 2 dims and more than one element per output channel,
    which keeps out biases, norm affines and weight-norm gains of shape (C, 1, ...).
    """
    skip = getattr(model, "classifier_name", None)
    out = {}
    for name, p in model.named_parameters():
        if skip and (name == skip or name.startswith(skip + ".")):
            continue
        if p.ndim >= 2 and p[0].numel() > 1:
            out[name] = p
    return out
