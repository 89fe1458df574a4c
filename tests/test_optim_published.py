"""The LR correction as the authors published it (PAPER.md §2), checked against rules written out here.

- ChannelSGD without per-channel LRs is torch.optim.SGD, bit for bit;
- float32: the angular step taken equals the intended one (float64) for s = ‖w‖²/‖w_ref‖² over
  1e-4 .. 1e6, where "step, then rescale the step" loses it;
- an independent float64 transcription of the published rule equals the project's arm over 60
  steps with momentum 0.9, across an epoch boundary and an LR drop;
- per-step reference timing reads the logged rows;
- the norm schedule keeps the direction of the SGD step it follows.
"""
from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch
from torch import nn

from conftest import SmallBNNet as Net
from conftest import hooked_step
from normmatters import runs
from normmatters.scale_invariant import scale_invariant_weights
from normmatters.optim import (ChannelSGD, LRCorrection, ReferenceNorms, build_optimizer, build_scheduler,
                               build_step_hooks)


def channel_norms(w: torch.Tensor) -> torch.Tensor:
    return w.detach().flatten(1).norm(dim=1)


def write_channels(run_dir, table: dict[str, torch.Tensor], steps_per_epoch: int = 1):
    """channels.parquet (+ epochs.parquet) of a fake reference run from {param: [epochs+1, channels]}."""
    rows = [{"epoch": e, "step": e * steps_per_epoch, "param": name, "channel": c, "norm": float(v[e, c])}
            for name, v in table.items() for e in range(v.shape[0]) for c in range(v.shape[1])]
    runs.write_table(run_dir, "channels", pd.DataFrame(rows))
    epochs = next(iter(table.values())).shape[0] - 1
    runs.write_table(run_dir, "epochs", pd.DataFrame(
        [{"epoch": e, "step": e * steps_per_epoch, "test_acc": 0.0} for e in range(1, epochs + 1)]))
    return run_dir


def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    ua, ub = a / a.norm(), b / b.norm()
    return float(2 * torch.atan2((ua - ub).norm(), (ua + ub).norm()))


# ---------------------------------------------------------------- ChannelSGD

@pytest.mark.parametrize("options", [dict(momentum=0.0), dict(momentum=0.9), dict(momentum=0.9, nesterov=True),
                                     dict(momentum=0.9, weight_decay=5e-4, dampening=0.1)])
def test_channel_sgd_without_channel_lrs_is_torch_sgd(options):
    torch.manual_seed(0)
    a = Net()
    b = copy.deepcopy(a)
    c = copy.deepcopy(a)
    opt_a, opt_b = ChannelSGD(a.parameters(), lr=0.1, **options), torch.optim.SGD(b.parameters(), lr=0.1, **options)
    # channel LRs of exactly 1 take ChannelSGD's own update, which must be SGD's up to rounding
    opt_c = ChannelSGD(c.parameters(), lr=0.1, **options)
    opt_c.set_channel_lr(c.conv1.weight, torch.ones(3))
    for step in range(3):
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(6, 2, 5, 5, generator=g), torch.randint(0, 3, (6,), generator=g)
        for model, opt in ((a, opt_a), (b, opt_b), (c, opt_c)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        torch.testing.assert_close(pc, pb, rtol=1e-5, atol=1e-7, msg=name)


def test_channel_lr_shape_and_mode_are_checked():
    w = nn.Parameter(torch.randn(3, 2))
    opt = ChannelSGD([w], lr=0.1)
    with pytest.raises(ValueError, match=r"shape \(2,\); expected \(3,\)"):
        opt.set_channel_lr(w, torch.ones(2))
    with pytest.raises(ValueError, match="where='buffer'"):
        opt.set_channel_lr(w, torch.ones(3), where="buffer")


# ---------------------------------------------------------------- float32 precision

def _one_channel_step(norm: float, s: float, dtype, lr=0.1, momentum=0.9, target=0.025, seed=0):
    """One corrected step of a single channel with ‖w‖ = norm and ‖w_ref‖ = norm/√s, gradients
    ∝ 1/‖w‖ (scale invariance) sized so that the intended angle is about `target`.
    Returns (w before, update direction d = μ·b + g in float64, the float32-or-64 weight after)."""
    g = torch.Generator().manual_seed(seed)
    w64 = torch.randn(1, 64, generator=g, dtype=torch.float64)
    w64 *= norm / w64.norm()
    ref = norm / math.sqrt(s)
    size = target * ref ** 2 / lr / norm  # angle ≈ lr·s·|d|/‖w‖ = lr·|d|·norm/ref²
    grads = []
    for _ in range(2):
        v = torch.randn(1, 64, generator=g, dtype=torch.float64)
        v -= (v * w64).sum() / w64.pow(2).sum() * w64  # tangent to the sphere, as a BN-invariant gradient
        grads.append(v * size / v.norm())
    return w64, grads, ref


def _corrected(w64, grads, ref, dtype, lr=0.1, momentum=0.9, naive=False):
    w = nn.Parameter(w64.clone().to(dtype))
    opt = ChannelSGD([w], lr=lr, momentum=momentum)
    for i, grad in enumerate(grads):
        s = channel_norms(w).pow(2) / torch.tensor([ref], dtype=dtype).pow(2)
        w.grad = grad.to(dtype)
        if naive and i == len(grads) - 1:  # the old arithmetic: plain step, then rescale it
            old = w.detach().clone()
            opt.step()
            with torch.no_grad():
                w.sub_(old).mul_(s.view(-1, 1)).add_(old)
        else:
            opt.set_channel_lr(w, s)
            opt.step()
    return w.detach()


@pytest.mark.parametrize("s", [1e-4, 1e-2, 1.0, 1e2, 1e4, 1e6])
@pytest.mark.parametrize("ref", [1.0, 1e3])
def test_float32_angular_step_equals_the_intended_one(s, ref):
    norm = ref * math.sqrt(s)
    w64, grads, ref_norm = _one_channel_step(norm, s, torch.float64)
    before64 = _corrected(w64, grads[:1], ref_norm, torch.float64)
    # intended, float64: buf = μ·g0 + g1 (after the first step), w ← w − η·s·buf
    s1 = float(before64.pow(2).sum()) / ref_norm ** 2
    buf = 0.9 * grads[0] + grads[1]
    intended = angle(before64, before64 - 0.1 * s1 * buf)
    assert 0.005 < intended < 0.1
    got32 = _corrected(w64, grads, ref_norm, torch.float32)
    before32 = _corrected(w64, grads[:1], ref_norm, torch.float32)
    assert angle(before32, got32) == pytest.approx(intended, rel=0.01)
    if norm > 1e4:  # the old "step, then rescale" arithmetic loses it: the test can tell them apart
        naive32 = _corrected(w64, grads, ref_norm, torch.float32, naive=True)
        assert abs(angle(before32, naive32) / intended - 1) > 0.05


# ---------------------------------------------------------------- the published rule, transcribed

def _batches(n, seed=11):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 2, 5, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g))
            for _ in range(n)]


def _transcribed_run(model: Net, ref: dict[str, torch.Tensor], batches, steps_per_epoch: int) -> Net:
    """PAPER.md §2 written out: per conv channel, buf ← μ·buf + g; w ← w − η·‖w‖²/‖w_WD(e)‖²·buf with
    ‖w_WD(e)‖ the reference norm logged at the end of epoch e; the classifier keeps weight decay
    5e-4 (buf ← μ·buf + g + λw; w ← w − η·buf), BN affines plain SGD; η = 0.1, ×0.1 from epoch 2."""
    mu, lam = 0.9, 5e-4
    params = dict(model.named_parameters())
    bufs = {n: None for n in params}
    for t, (x, y) in enumerate(batches):
        epoch = t // steps_per_epoch + 1
        lr = 0.1 if epoch == 1 else 0.01
        for p in params.values():
            p.grad = None
        nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for name, p in params.items():
                d = p.grad + (lam * p if name.startswith("fc.") else 0)
                bufs[name] = d.clone() if bufs[name] is None else mu * bufs[name] + d
                if name in ("conv1.weight", "conv2.weight"):
                    for c in range(p.shape[0]):
                        factor = p[c].pow(2).sum() / ref[name][epoch, c] ** 2
                        p[c] -= lr * factor * bufs[name][c]
                else:
                    p -= lr * bufs[name]
    return model


def test_project_arm_equals_the_transcribed_published_rule(tmp_path):
    torch.manual_seed(0)
    model = Net().double()
    steps_per_epoch, epochs = 30, 2
    g = torch.Generator().manual_seed(4)
    ref = {n: channel_norms(p) * (torch.rand(epochs + 1, p.shape[0], generator=g, dtype=torch.float64) * 0.6 + 0.7)
           for n, p in scale_invariant_weights(model).items()}
    write_channels(tmp_path, ref, steps_per_epoch)
    expected = _transcribed_run(copy.deepcopy(model), ref, _batches(steps_per_epoch * epochs), steps_per_epoch)
    got = _project_run(model, tmp_path, steps_per_epoch, epochs, "end_of_epoch")
    for (name, p), want in zip(got.named_parameters(), expected.parameters()):
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p, want, rtol=1e-10, atol=1e-13, msg=name)
    # the comparison can tell reference timings apart
    other = _project_run(copy.deepcopy(Net().double()), tmp_path, steps_per_epoch, epochs, "interpolate")
    assert (other.conv1.weight - expected.conv1.weight).abs().max() > 1e-3


def _project_run(model, reference, steps_per_epoch, epochs, timing):
    torch.manual_seed(0)
    model.load_state_dict(Net().double().state_dict())
    conf = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "wd_scope": "last_only", "schedule": "step",
            "milestones": [1], "gamma": 0.1, "epochs": epochs, "control": "lr_correction",
            "reference": str(reference), "lr_correction_mode": "update", "reference_timing": timing}
    opt = build_optimizer(model, conf)
    hooks = build_step_hooks(conf, model, opt)
    sched = build_scheduler(opt, conf, steps_per_epoch, epochs)
    batches = iter(_batches(steps_per_epoch * epochs))
    for epoch in range(1, epochs + 1):
        for h in hooks:
            h.on_epoch_start(epoch)
        for k in range(steps_per_epoch):
            hooked_step(model, opt, hooks, *next(batches), k, steps_per_epoch)
            sched.step()
    # not trivially plain SGD: the factors are far from 1
    assert any((s - 1).abs().max() > 0.3 for s in hooks[0].last_scale.values())
    return model


# ---------------------------------------------------------------- per-step reference timing

def test_per_step_timing_interpolates_between_logged_steps(tmp_path):
    w = {"conv.weight": torch.zeros(2, 3)}
    epoch_rows = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 8.0]])  # ends of epochs 0, 1, 2 (S = 4)
    write_channels(tmp_path, {"conv.weight": epoch_rows}, steps_per_epoch=4)
    logged = {2: [2.0, 10.0], 4: [3.0, 4.0], 6: [9.0, 6.0]}  # step 4 repeats the epoch-1 row
    runs.write_table(tmp_path, "channel_steps", pd.DataFrame(
        [{"epoch": t // 4 + 1, "step": t, "param": "conv.weight", "channel": c, "norm": v[c]}
         for t, v in logged.items() for c in range(2)]))
    ref = ReferenceNorms(tmp_path, w, epochs=2, timing="per_step")
    cases = {(1, 0.0): [1.0, 2.0], (1, 0.5): [2.0, 10.0], (1, 0.25): [1.5, 6.0], (1, 0.75): [2.5, 7.0],
             (2, 0.0): [3.0, 4.0], (2, 0.25): [6.0, 5.0], (2, 0.75): [7.0, 7.0], (2, 1.0): [5.0, 8.0]}
    for (epoch, frac), want in cases.items():
        assert ref.at("conv.weight", epoch, frac).tolist() == pytest.approx(want), (epoch, frac)
    end = ReferenceNorms(tmp_path, w, epochs=2, timing="end_of_epoch")
    assert end.at("conv.weight", 1, 0.0).tolist() == [3.0, 4.0]
    assert end.at("conv.weight", 2, 0.5).tolist() == [5.0, 8.0]


def test_per_step_timing_needs_the_logged_table(tmp_path):
    write_channels(tmp_path, {"conv.weight": torch.ones(3, 2)})
    with pytest.raises(ValueError, match="train.log_channels_every"):
        ReferenceNorms(tmp_path, {"conv.weight": torch.zeros(2, 3)}, epochs=2, timing="per_step")
    with pytest.raises(ValueError, match="reference_timing='later'.*end_of_epoch, interpolate, per_step"):
        ReferenceNorms(tmp_path, {"conv.weight": torch.zeros(2, 3)}, epochs=2, timing="later")


def test_lr_correction_needs_a_channel_sgd(tmp_path):
    write_channels(tmp_path, {"conv.weight": torch.ones(3, 2)})
    w = nn.Parameter(torch.ones(2, 3))
    ref = ReferenceNorms(tmp_path, {"conv.weight": w}, epochs=2)
    with pytest.raises(ValueError, match="ChannelSGD"):
        LRCorrection({"conv.weight": w}, ref, torch.optim.SGD([w], lr=0.1))


# ---------------------------------------------------------------- norm schedule

@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_norm_schedule_keeps_the_direction_of_the_sgd_step(tmp_path, momentum):
    """After the projection each channel points where the SGD step took it (only its length changes)."""
    torch.manual_seed(0)
    model = Net().double()
    g = torch.Generator().manual_seed(2)
    ref = {n: channel_norms(p) * (torch.rand(3, p.shape[0], generator=g, dtype=torch.float64) + 0.5)
           for n, p in scale_invariant_weights(model).items()}
    write_channels(tmp_path, ref, steps_per_epoch=4)
    conf = {"lr": 0.1, "momentum": momentum, "weight_decay": 5e-4, "wd_scope": "last_only", "schedule": "step",
            "milestones": [1], "epochs": 2, "control": "norm_schedule", "reference": str(tmp_path)}
    opt = build_optimizer(model, conf)
    hooks = build_step_hooks(conf, model, opt)
    for epoch, k in ((1, 0), (1, 1), (2, 0)):
        x, y = _batches(1, seed=epoch * 10 + k)[0]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        # what plain SGD (momentum, base LR) does from here, computed by hand
        sgd = {}
        for name, p in scale_invariant_weights(model).items():
            buf = opt.state[p].get("momentum_buffer")
            d = p.grad if buf is None or momentum == 0 else momentum * buf + p.grad
            sgd[name] = (p - 0.1 * d).detach()
        for h in hooks:
            h.on_epoch_start(epoch)
            h.before_step(k, 4)
        opt.step()
        for h in hooks:
            h.after_step()
        factor = math.sqrt(10) if epoch == 2 else 1.0
        for name, p in scale_invariant_weights(model).items():
            got = p.detach().flatten(1)
            want = sgd[name].flatten(1)
            cos = (got * want).sum(1) / (got.norm(dim=1) * want.norm(dim=1))
            torch.testing.assert_close(cos, torch.ones_like(cos), rtol=0, atol=1e-12)
            torch.testing.assert_close(got.norm(dim=1), ref[name][epoch] * factor, rtol=1e-12, atol=0)
