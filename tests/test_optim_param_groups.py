"""Parameter groups (who gets weight decay), optimizer and LR schedules."""
from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from normmatters.optim import build_optimizer, build_param_groups, build_scheduler, lr_factor


class Net(nn.Module):
    classifier_name = "head"

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.lin = nn.Linear(4, 6, bias=False)   # invariant too (followed by a norm in real nets)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.lin(self.bn(self.conv(x)).mean((2, 3))))


def _by_kind(groups):
    return {g["kind"]: g for g in groups}


@pytest.mark.parametrize("scope, expected", [
    ("all", {"invariant": 0.1, "other": 0.1, "classifier": 0.1}),
    ("all_but_last", {"invariant": 0.1, "other": 0.1, "classifier": 0.0}),
    ("last_only", {"invariant": 0.0, "other": 0.0, "classifier": 0.1}),
    ("none", {"invariant": 0.0, "other": 0.0, "classifier": 0.0}),
])
def test_wd_scope(scope, expected):
    groups = _by_kind(build_param_groups(Net(), lr=1.0, weight_decay=0.1, wd_scope=scope))
    assert {k: g["weight_decay"] for k, g in groups.items()} == expected
    assert groups["invariant"]["names"] == ["conv.weight", "lin.weight"]
    assert groups["invariant"]["invariant"] and not groups["other"]["invariant"]
    assert groups["other"]["names"] == ["bn.weight", "bn.bias"]
    assert groups["classifier"]["names"] == ["head.weight", "head.bias"]


def test_groups_cover_every_param_once_and_names_follow_params():
    net = Net()
    groups = build_param_groups(net, lr=0.1, weight_decay=1e-4)
    named = dict(net.named_parameters())
    flat = [p for g in groups for p in g["params"]]
    assert len(flat) == len(named) == len({id(p) for p in flat})
    for g in groups:
        assert all(named[n] is p for n, p in zip(g["names"], g["params"], strict=True))


def test_invariant_multipliers_and_schedule_flag():
    groups = _by_kind(build_param_groups(Net(), lr=0.1, weight_decay=1e-3, invariant_lr_mult=4.0,
                                         invariant_wd_mult=0.25, invariant_scheduled=False))
    assert groups["invariant"]["lr"] == pytest.approx(0.4)
    assert groups["invariant"]["weight_decay"] == pytest.approx(2.5e-4)
    assert groups["invariant"]["scheduled"] is False
    assert groups["other"]["lr"] == 0.1 and groups["other"]["scheduled"] is True


def test_bad_scope_and_missing_classifier():
    with pytest.raises(ValueError, match="wd_scope"):
        build_param_groups(Net(), lr=0.1, weight_decay=0.1, wd_scope="last")
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2))   # no classifier_name
    with pytest.raises(ValueError, match="classifier_name"):
        build_param_groups(plain, lr=0.1, weight_decay=0.1, wd_scope="last_only")
    assert build_param_groups(plain, lr=0.1, weight_decay=0.1, wd_scope="all")


@pytest.mark.parametrize("as_omegaconf", [False, True])
def test_build_optimizer_from_config(as_omegaconf):
    cfg = {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "wd_scope": "last_only",
           "control": "norm_schedule"}
    if as_omegaconf:
        cfg = OmegaConf.create(cfg)
    opt = build_optimizer(Net(), cfg)
    assert isinstance(opt, torch.optim.SGD)
    groups = _by_kind(opt.param_groups)
    assert groups["invariant"]["scheduled"] is False and groups["invariant"]["weight_decay"] == 0.0
    assert groups["classifier"]["weight_decay"] == 5e-4
    assert all(g["momentum"] == 0.9 and g["nesterov"] for g in opt.param_groups)
    with pytest.raises(ValueError, match="control"):
        build_optimizer(Net(), {"lr": 0.1, "control": "magic"})


def test_lr_factor():
    step = {"schedule": "step", "milestones": [20, 40, 60], "gamma": 0.1}
    assert lr_factor(step, 0.0) == 1.0 and lr_factor(step, 19.99) == 1.0
    assert lr_factor(step, 20.0) == pytest.approx(0.1)
    assert lr_factor(step, 45.5) == pytest.approx(0.01)
    assert lr_factor(step, 79.9) == pytest.approx(0.001)
    cos = OmegaConf.create({"schedule": "cosine", "epochs": 10})
    assert lr_factor(cos, 0) == 1.0 and lr_factor(cos, 5) == pytest.approx(0.5)
    assert lr_factor(cos, 10) == pytest.approx(0.0)
    assert lr_factor(cos, 2.5) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor({"schedule": "constant"}, 50) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_factor({"schedule": "poly"}, 1.0)


def test_scheduler_steps_per_iteration_and_leaves_unscheduled_groups():
    cfg = {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "control": "norm_schedule",
           "schedule": "step", "milestones": [2], "gamma": 0.1}
    opt = build_optimizer(Net(), cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=3, epochs=4)
    lrs = []
    for _ in range(12):
        lrs.append({g["kind"]: g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    # epochs 1-2 (iterations 0..5) at 0.1, epoch 3 on (iteration 6..) at 0.01
    assert [round(x["classifier"], 6) for x in lrs] == [0.1] * 6 + [0.01] * 6
    assert all(x["invariant"] == 0.1 for x in lrs)
    state = sched.state_dict()
    assert "lr_lambdas" not in state or all(v is None for v in state["lr_lambdas"])

    cos = {**cfg, "schedule": "cosine", "control": "none"}
    opt = build_optimizer(Net(), cos)
    sched = build_scheduler(opt, cos, steps_per_epoch=4, epochs=2)
    for _ in range(4):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
