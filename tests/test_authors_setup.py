"""The authors' set-up as options: PyTorch 0.3's initialization (model.init=torch03), their NaN
handling (optim.zero_nan) and their loop that trains on through a non-finite loss
(train.stop_on_nonfinite=false)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from normmatters.models import build_model
from normmatters.optim.channel_sgd import ChannelSGD
from normmatters import runs
from normmatters.train import train

from conftest import run_dir_of
from test_train import tiny


def test_torch03_init_draws_pytorch_0_3_defaults():
    torch.manual_seed(0)
    model = build_model("vgg11", 10, norm="l2", width=0.5, init="torch03")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        fan_in = conv.in_channels * 9
        bound = 1 / math.sqrt(fan_in)
        assert conv.weight.abs().max() <= bound
        # U(-b, b) has variance b²/3
        assert conv.weight.var().item() == pytest.approx(bound ** 2 / 3, rel=0.15)
    gammas = torch.cat([m.weight for m in model.modules() if m.__class__.__name__.endswith("BatchNorm")
                        or hasattr(m, "running_var") and isinstance(getattr(m, "weight", None), nn.Parameter)])
    assert gammas.min() >= 0 and gammas.max() <= 1 and gammas.mean().item() == pytest.approx(0.5, abs=0.05)
    fc = model.classifier
    assert fc.bias.abs().max() <= 1 / math.sqrt(fc.in_features)


def test_default_init_is_unchanged_by_the_option():
    torch.manual_seed(3)
    a = build_model("resnet20", 10, width=0.25)
    torch.manual_seed(3)
    b = build_model("resnet20", 10, width=0.25, init=None)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="init='he' is not valid"):
        build_model("resnet20", 10, init="he")


def _params(seed=0):
    torch.manual_seed(seed)
    return [nn.Parameter(torch.randn(4, 3, 3, 3)), nn.Parameter(torch.randn(10))]


def _grads(step):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(4, 3, 3, 3, generator=g), torch.randn(10, generator=g)]


def test_zero_nan_without_a_nan_is_plain_sgd_bit_for_bit():
    a, b = _params(), _params()
    sgd = torch.optim.SGD(a, lr=0.1, momentum=0.9, weight_decay=5e-4)
    ours = ChannelSGD(b, lr=0.1, momentum=0.9, weight_decay=5e-4, zero_nan=True)
    for step in range(5):
        for p, q, g in zip(a, b, _grads(step)):
            p.grad, q.grad = g.clone(), g.clone()
        sgd.step()
        ours.step()
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_zero_nan_keeps_the_weights_whose_step_is_nan():
    (w,) = _params()[:1]
    start = w.detach().clone()
    opt = ChannelSGD([w], lr=0.1, momentum=0.9, zero_nan=True)
    g = torch.ones_like(w)
    g[0, 0, 0, 0] = float("nan")
    w.grad = g
    opt.step()
    expected = start - 0.1 * torch.ones_like(w)  # first step: buffer = gradient
    expected[0, 0, 0, 0] = start[0, 0, 0, 0]
    assert torch.equal(w.detach(), expected)
    assert not torch.isnan(opt.state[w]["momentum_buffer"]).any()  # the plain step zeroes it in the buffer


def test_zero_nan_with_channel_lrs_skips_nan_entries_and_keeps_the_buffer():
    (w,) = _params()[:1]
    start = w.detach().clone()
    opt = ChannelSGD([w], lr=0.1, momentum=0.9, zero_nan=True)
    scale = torch.tensor([1.0, 2.0, 3.0, 4.0])
    opt.set_channel_lr(w, scale)
    g = torch.ones_like(w)
    g[1, 0, 0, 0] = float("nan")
    w.grad = g
    opt.step()
    expected = start - 0.1 * scale.view(-1, 1, 1, 1) * torch.ones_like(w)
    expected[1, 0, 0, 0] = start[1, 0, 0, 0]
    assert torch.allclose(w.detach(), expected, rtol=0, atol=1e-6)
    assert torch.isnan(opt.state[w]["momentum_buffer"][1, 0, 0, 0])  # as the authors: only the step is cleaned


def test_authors_loop_trains_on_through_a_nonfinite_loss(tiny_cifar, tmp_path, compose):
    cfg = compose(tiny(tiny_cifar, tmp_path, "optim.lr=1e30", "wandb.mode=disabled", "train.epochs=2",
                       "train.stop_on_nonfinite=false", "optim.zero_nan=true"))
    final = train(cfg)
    assert final["status"] == "finished"
    epochs = runs.read_table(run_dir_of(cfg), "epochs")
    assert list(epochs["epoch"]) == [1, 2] and not math.isfinite(epochs["train_loss"].iloc[-1])


def test_authors_options_are_checked_once_with_one_line(tiny_cifar, tmp_path):
    from test_train import run_script

    for key, value in (("model.init", "kaiming"), ("optim.zero_nan", "1"), ("train.stop_on_nonfinite", "maybe")):
        res = run_script(tiny(tiny_cifar, tmp_path, f"{key}={value}", "wandb.mode=disabled"))
        assert res.returncode != 0
        assert key in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
