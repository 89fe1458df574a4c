"""LR correction and norm schedule (PAPER.md §2) against fake reference runs in the real run format."""
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
from normmatters.optim import (LRCorrection, NormSchedule, StepHook, build_optimizer, build_scheduler,
                               build_step_hooks)


def net():
    torch.manual_seed(0)
    return Net().double()


def norms(p):
    return p.detach().flatten(1).norm(dim=1)


def write_reference(run_dir, table: dict[str, torch.Tensor]):
    """channels.parquet from {param: tensor [epochs+1, channels]}, in the logger's row format."""
    rows = [{"epoch": e, "step": 0, "param": name, "channel": c, "norm": float(v[e, c])}
            for name, v in table.items() for e in range(v.shape[0]) for c in range(v.shape[1])]
    runs.write_table(run_dir, "channels", pd.DataFrame(rows))
    return run_dir


def reference_from(model, epochs, scale=1.0):
    """Every epoch row = the model's current channel norms times `scale` (a float or {name: [E+1, C]})."""
    out = {}
    for name, p in scale_invariant_weights(model).items():
        base = norms(p).repeat(epochs + 1, 1)
        out[name] = base * (scale[name] if isinstance(scale, dict) else scale)
    return out


def cfg(**kw):
    base = {"lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4, "wd_scope": "last_only",
            "schedule": "step", "milestones": [1], "gamma": 0.1, "epochs": 2, "control": "lr_correction"}
    return {**base, **kw}


def one_step(model, opt, hooks, epoch=1, k=0, steps=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 2, 5, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=g)
    for h in hooks:
        h.on_epoch_start(epoch)
    hooked_step(model, opt, hooks, x, y, k, steps)


def updates(model_a, model_b, before):
    return ({n: p.detach() - before[n] for n, p in scale_invariant_weights(model_a).items()},
            {n: p.detach() - before[n] for n, p in scale_invariant_weights(model_b).items()})


def prime_momentum(model, opt):
    """Take one plain step so the momentum buffers are non-zero."""
    one_step(model, opt, [], seed=7)


# ---------------------------------------------------------------- LR correction

def test_equal_reference_norms_give_plain_sgd(tmp_path):
    model = net()
    conf = cfg(reference=str(tmp_path))
    opt = build_optimizer(model, conf)
    prime_momentum(model, opt)
    write_reference(tmp_path, reference_from(model, 2))
    plain = copy.deepcopy(model)
    plain_opt = build_optimizer(plain, conf)
    plain_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    before = {n: p.detach().clone() for n, p in scale_invariant_weights(model).items()}
    hooks = build_step_hooks(conf, model, opt)
    assert len(hooks) == 1 and isinstance(hooks[0], LRCorrection) and isinstance(hooks[0], StepHook)
    one_step(model, opt, hooks)
    one_step(plain, plain_opt, [])
    for (n, a), b in zip(model.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15, msg=n)
    assert all(torch.allclose(s, torch.ones_like(s)) for s in hooks[0].last_scale.values())
    assert any((p - before[n]).abs().max() > 0 for n, p in scale_invariant_weights(model).items())


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_half_reference_norms_make_each_channel_step_four_times_larger(tmp_path, momentum):
    model = net()
    conf = cfg(reference=str(tmp_path), momentum=momentum)
    opt = build_optimizer(model, conf)
    prime_momentum(model, opt)
    write_reference(tmp_path, reference_from(model, 2, scale=0.5))
    plain = copy.deepcopy(model)
    plain_opt = build_optimizer(plain, conf)
    plain_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    before = {n: p.detach().clone() for n, p in scale_invariant_weights(model).items()}
    one_step(model, opt, build_step_hooks(conf, model, opt))
    one_step(plain, plain_opt, [])
    corrected, sgd = updates(model, plain, before)
    for name in before:
        for c in range(before[name].shape[0]):
            assert sgd[name][c].abs().max() > 0
            torch.testing.assert_close(corrected[name][c], 4.0 * sgd[name][c], rtol=1e-9, atol=1e-15)
    # the classifier and the norm affines are untouched by the correction
    torch.testing.assert_close(model.fc.weight, plain.fc.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.bn1.bias, plain.bn1.bias, rtol=0, atol=0)
    # momentum buffers are the optimizer's own (identical in both runs)
    for p, q in zip(model.parameters(), plain.parameters()):
        if momentum:
            torch.testing.assert_close(opt.state[p]["momentum_buffer"], plain_opt.state[q]["momentum_buffer"])


@pytest.mark.parametrize("timing", ["end_of_epoch", "interpolate", None])
def test_per_channel_scale_by_reference_timing(tmp_path, timing):
    """Channel c with reference rows r1 (end of epoch 1) and r2 (end of epoch 2), halfway through
    epoch 2: scale = ||w||² / r2² (end_of_epoch, the default) or ||w||² / ((r1 + r2)/2)² (interpolate)."""
    model = net()
    g = torch.Generator().manual_seed(3)
    factors = {n: torch.rand(3, p.shape[0], generator=g, dtype=torch.float64) + 0.5
               for n, p in scale_invariant_weights(model).items()}
    conf = cfg(reference=str(tmp_path), momentum=0.0, reference_timing=timing)
    write_reference(tmp_path, reference_from(model, 2, scale=factors))
    opt = build_optimizer(model, conf)
    plain = copy.deepcopy(model)
    plain_opt = build_optimizer(plain, conf)
    before = {n: p.detach().clone() for n, p in scale_invariant_weights(model).items()}
    one_step(model, opt, build_step_hooks(conf, model, opt), epoch=2, k=2, steps=4)
    one_step(plain, plain_opt, [], epoch=2)
    corrected, sgd = updates(model, plain, before)
    for name, f in factors.items():
        expected = 1.0 / (0.5 * (f[1] + f[2]) if timing == "interpolate" else f[2]) ** 2
        torch.testing.assert_close(corrected[name], expected.view(-1, 1, 1, 1) * sgd[name], rtol=1e-9, atol=1e-15)


# ---------------------------------------------------------------- norm schedule

@pytest.mark.parametrize("timing", ["end_of_epoch", "interpolate"])
def test_norm_schedule_projects_to_reference_times_sqrt10_per_missed_drop(tmp_path, timing):
    model = net()
    g = torch.Generator().manual_seed(5)
    factors = {n: torch.rand(3, p.shape[0], generator=g, dtype=torch.float64) + 0.5
               for n, p in scale_invariant_weights(model).items()}
    ref = write_reference(tmp_path, reference_from(model, 2, scale=factors))
    base = {n: norms(p) for n, p in scale_invariant_weights(model).items()}
    conf = cfg(control="norm_schedule", reference=str(ref), milestones=[1], reference_timing=timing)
    opt = build_optimizer(model, conf)
    hooks = build_step_hooks(conf, model, opt)
    assert len(hooks) == 1 and isinstance(hooks[0], NormSchedule)
    # last step of epoch 1: target = reference row of epoch 1, no drop yet
    one_step(model, opt, hooks, epoch=1, k=3, steps=4)
    for n, p in scale_invariant_weights(model).items():
        torch.testing.assert_close(norms(p), base[n] * factors[n][1], rtol=1e-12, atol=0)
    # first step of epoch 2 (after milestone 1), times sqrt(10): row 2 (end_of_epoch) or 1/4 of the
    # way from row 1 to row 2 (interpolate)
    one_step(model, opt, hooks, epoch=2, k=0, steps=4)
    for n, p in scale_invariant_weights(model).items():
        f = factors[n]
        row = f[2] if timing == "end_of_epoch" else 0.75 * f[1] + 0.25 * f[2]
        target = base[n] * row * math.sqrt(10)
        torch.testing.assert_close(norms(p), target, rtol=1e-12, atol=0)
    # the invariant group stays at the base LR while the scheduler drops the others
    sched = build_scheduler(opt, conf, steps_per_epoch=4, epochs=2)
    for _ in range(4):
        opt.step()
        sched.step()
    assert {g["kind"]: g["lr"] for g in opt.param_groups} == pytest.approx(
        {"invariant": 0.1, "other": 0.01, "classifier": 0.01})


def test_norm_schedule_drop_factor_option(tmp_path):
    model = net()
    ref = write_reference(tmp_path, reference_from(model, 3))
    base = {n: norms(p) for n, p in scale_invariant_weights(model).items()}
    conf = cfg(control="norm_schedule", reference=str(ref), milestones=[1, 2], epochs=3,
               norm_schedule_drop_factor=4.0)
    opt = build_optimizer(model, conf)
    one_step(model, opt, build_step_hooks(conf, model, opt), epoch=3, k=3, steps=4)
    for n, p in scale_invariant_weights(model).items():
        torch.testing.assert_close(norms(p), base[n] * 4.0, rtol=1e-12, atol=0)   # sqrt(4) ** 2


def test_norm_schedule_needs_unscheduled_invariant_group_and_step_schedule(tmp_path):
    model = net()
    ref = write_reference(tmp_path, reference_from(model, 2))
    conf = cfg(control="norm_schedule", reference=str(ref))
    scheduled_opt = build_optimizer(model, {**conf, "control": "none"})
    with pytest.raises(ValueError, match="base LR"):
        build_step_hooks(conf, model, scheduled_opt)
    with pytest.raises(ValueError, match="cosine"):
        build_step_hooks({**conf, "schedule": "cosine"}, model, build_optimizer(model, conf))


# ---------------------------------------------------------------- validation

def _valid_reference(tmp_path, model, epochs=2):
    return write_reference(tmp_path / "ref", reference_from(model, epochs))


@pytest.mark.parametrize("control", ["lr_correction", "norm_schedule"])
def test_reference_validation(tmp_path, control):
    model = net()
    opt = build_optimizer(model, cfg(control=control))
    good = _valid_reference(tmp_path, model)

    def check(match, **kw):
        with pytest.raises(ValueError, match=match) as err:
            build_step_hooks(cfg(control=control, **kw), model, opt)
        assert "\n" not in str(err.value)

    check("no reference run directory")
    check("not found", reference=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    check("no channels table", reference=str(tmp_path / "empty"))
    check("lacks epoch 3", reference=str(good), epochs=3)
    table = reference_from(model, 2)
    del table["conv2.weight"]
    check("'conv2.weight' missing", reference=str(write_reference(tmp_path / "noparam", table)))
    table = reference_from(model, 2)
    table["conv1.weight"] = table["conv1.weight"][:, :2]
    check("'conv1.weight' has 2 channels.*expected 3", reference=str(write_reference(tmp_path / "ch", table)))
    table = reference_from(model, 2)
    table["conv1.weight"][1, 0] = float("nan")
    check("finite positive", reference=str(write_reference(tmp_path / "nan", table)))
    conf = cfg(control=control, reference=str(good))
    del conf["epochs"]
    with pytest.raises(ValueError, match="epochs"):
        build_step_hooks(conf, model, opt)
    assert len(build_step_hooks(cfg(control=control, reference=str(good)), model, opt)) == 1


def test_no_control_and_unknown_control():
    model = net()
    opt = build_optimizer(model, cfg(control="none"))
    assert build_step_hooks(cfg(control="none"), model, opt) == []
    with pytest.raises(ValueError, match="optim.control=.wd_mimic. is not valid; choose one of: none, lr_correction"):
        build_step_hooks(cfg(control="wd_mimic"), model, opt)


def test_lr_correction_warns_on_invariant_weight_decay(tmp_path):
    model = net()
    ref = _valid_reference(tmp_path, model)
    conf = cfg(reference=str(ref), wd_scope="all")
    with pytest.warns(UserWarning, match="weight decay"):
        build_step_hooks(conf, model, build_optimizer(model, conf))


def test_gradient_mode_scales_what_enters_the_momentum_buffer(tmp_path):
    """mode=gradient: with a primed buffer b, the step is η(μb + s·g) (update mode: η·s(μb + g));
    without momentum the two modes are the same step."""
    model = net()
    conf = cfg(reference=str(tmp_path), weight_decay=0.0, lr_correction_mode="gradient")
    opt = build_optimizer(model, conf)
    prime_momentum(model, opt)
    write_reference(tmp_path, reference_from(model, 2, scale=0.5))  # s = 4 for every channel
    params = scale_invariant_weights(model)
    buf = {n: opt.state[p]["momentum_buffer"].clone() for n, p in params.items()}
    before = {n: p.detach().clone() for n, p in params.items()}
    hooks = build_step_hooks(conf, model, opt)
    assert hooks[0].mode == "gradient"
    for h in hooks:
        h.on_epoch_start(1)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 2, 5, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,), generator=g)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    grads = {n: p.grad.clone() for n, p in params.items()}
    for h in hooks:
        h.before_step(0, 4)
    opt.step()
    for h in hooks:
        h.after_step()
    for n, p in params.items():
        expected = before[n] - 0.1 * (0.9 * buf[n] + 4.0 * grads[n])
        torch.testing.assert_close(p.detach(), expected, rtol=1e-10, atol=1e-14, msg=n)
        assert not torch.allclose(expected, before[n] - 0.1 * 4.0 * (0.9 * buf[n] + grads[n]))


def test_modes_agree_without_momentum(tmp_path):
    write_reference(tmp_path, reference_from(net(), 2, scale=0.5))
    models = []
    for mode in ("update", "gradient"):
        model = net()
        conf = cfg(reference=str(tmp_path), momentum=0.0, weight_decay=0.0, lr_correction_mode=mode)
        opt = build_optimizer(model, conf)
        one_step(model, opt, build_step_hooks(conf, model, opt))
        models.append(model)
    for (n, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15, msg=n)


def test_unknown_lr_correction_mode(tmp_path):
    model = net()
    write_reference(tmp_path, reference_from(model, 2))
    conf = cfg(reference=str(tmp_path), lr_correction_mode="buffer")
    with pytest.raises(ValueError, match="lr_correction_mode='buffer'.*update, gradient"):
        build_step_hooks(conf, model, build_optimizer(model, conf))
