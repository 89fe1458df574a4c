"""Parameter groups: who gets weight decay, and which weights are scale-invariant (PAPER.md §2).

Every parameter of the model falls in exactly one of three kinds:

* ``invariant``: the scale-invariant weights (conv/linear weights followed by a normalization,
  outside the classifier; see :func:`normmatters.scale_invariant.scale_invariant_weights`);
* ``classifier``: the parameters of ``model.classifier_name`` (the "last" layer);
* ``other``: everything else (normalization affines, biases, ...).

Weight decay by ``wd_scope``:

=================  ==========  ==========  ==========
wd_scope           invariant   other       classifier
=================  ==========  ==========  ==========
``all``            λ           λ           λ
``all_but_last``   λ           λ           0
``last_only``      0           0           λ          (the paper's "WD off" arm)
``none``           0           0           0
=================  ==========  ==========  ==========

Each group records ``names`` (parameter names, in the order of ``params``), ``kind``,
``invariant`` (True for the scale-invariant group) and ``scheduled`` (False tells
:func:`normmatters.optim.schedules.build_scheduler` to keep that group at its base LR).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from normmatters.scale_invariant import scale_invariant_weights

from ._cfg import as_optim_cfg, unwrap_model
from .channel_sgd import ChannelSGD

WD_SCOPES = ("all", "all_but_last", "last_only", "none")

# (invariant, other, classifier) -> does the kind get weight decay?
_WD_TABLE = {
    "all": (True, True, True),
    "all_but_last": (True, True, False),
    "last_only": (False, False, True),
    "none": (False, False, False),
}


def classifier_param_names(model: nn.Module) -> list[str]:
    """Names of the parameters of ``model.classifier_name`` (empty when the model names none)."""
    model = unwrap_model(model)
    prefix = getattr(model, "classifier_name", None)
    if not prefix:
        return []
    return [n for n, _ in model.named_parameters() if n == prefix or n.startswith(prefix + ".")]


def build_param_groups(model: nn.Module, lr: float, weight_decay: float, wd_scope: str = "all",
                       invariant_lr_mult: float = 1.0, invariant_wd_mult: float = 1.0,
                       invariant_scheduled: bool = True) -> list[dict[str, Any]]:
    """Optimizer parameter groups for ``model`` (see the module docstring for the WD table).

    ``invariant_lr_mult`` / ``invariant_wd_mult`` multiply the LR / WD of the scale-invariant
    group only (the exact-equivalence check of PAPER.md §1 uses c² and 1/c²).
    ``invariant_scheduled=False`` marks that group ``scheduled=False`` (the norm-schedule arm).
    Empty groups are left out; parameters with ``requires_grad=False`` are skipped.
    """
    if wd_scope not in WD_SCOPES:
        raise ValueError(f"unknown wd_scope {wd_scope!r}; valid: {', '.join(WD_SCOPES)}")
    model = unwrap_model(model)
    invariant_ids = {id(p) for p in scale_invariant_weights(model).values()}
    classifier = set(classifier_param_names(model))
    if wd_scope in ("all_but_last", "last_only") and weight_decay != 0 and not classifier:
        raise ValueError(
            f"wd_scope={wd_scope!r} needs the classifier: set `classifier_name` on "
            f"{type(model).__name__} to the name of its last (classifier) module")

    kinds: dict[str, tuple[list[str], list[nn.Parameter]]] = {
        "invariant": ([], []), "other": ([], []), "classifier": ([], [])}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        kind = "invariant" if id(p) in invariant_ids else "classifier" if name in classifier else "other"
        kinds[kind][0].append(name)
        kinds[kind][1].append(p)

    decays = dict(zip(("invariant", "other", "classifier"), _WD_TABLE[wd_scope]))
    groups = []
    for kind, (names, params) in kinds.items():
        if not params:
            continue
        wd = float(weight_decay) if decays[kind] else 0.0
        group_lr = float(lr)
        if kind == "invariant":
            wd *= float(invariant_wd_mult)
            group_lr *= float(invariant_lr_mult)
        groups.append({
            "params": params, "names": names, "kind": kind, "lr": group_lr, "weight_decay": wd,
            "invariant": kind == "invariant",
            "scheduled": bool(invariant_scheduled) if kind == "invariant" else True,
        })
    return groups


def build_optimizer(model: nn.Module, cfg: Any) -> ChannelSGD:
    """SGD (:class:`ChannelSGD`: plain ``torch.optim.SGD`` until a hook sets per-channel LRs) over
    :func:`build_param_groups` from ``cfg`` (an :class:`OptimCfg`, or a dict or DictConfig).

    Keys: ``lr``, ``momentum`` (0.9), ``nesterov`` (False), ``weight_decay``
    (0), ``wd_scope`` ("all"), ``control`` ("none"; "norm_schedule" keeps the invariant group at
    its base LR), ``zero_nan`` (False: the authors' NaN handling, see :class:`ChannelSGD`), and
    optionally ``invariant_lr_mult`` / ``invariant_wd_mult`` (1).
    """
    c = as_optim_cfg(cfg)
    if c.lr is None:
        raise ValueError("optimizer config needs `lr`")
    groups = build_param_groups(
        model, lr=c.lr, weight_decay=c.weight_decay, wd_scope=c.wd_scope, invariant_lr_mult=c.invariant_lr_mult,
        invariant_wd_mult=c.invariant_wd_mult, invariant_scheduled=c.control != "norm_schedule")
    return ChannelSGD(groups, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, zero_nan=c.zero_nan)
