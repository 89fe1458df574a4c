"""Weight normalization (WN) and bounded weight normalization (BWN, PAPER.md §5)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from normmatters.norms import apply_weight_norm, build_norm, channel_norms, remove_weight_norm


def _model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), build_norm("mean", 8), nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1, bias=False), build_norm("mean", 6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Sequential(nn.Linear(6, 4)),  # "8": the classifier, kept unnormalized in the paper
    )


def _train(model: nn.Module, steps: int = 5, lr: float = 0.5, weight_decay: float = 1e-3) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 3, 6, 6, generator=g)
        target = torch.randint(0, 4, (8,), generator=g)
        loss = nn.functional.cross_entropy(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_wn_matches_pytorch_weight_norm():
    ours, theirs = _model(), _model()
    apply_weight_norm(ours, "wn")
    for m in theirs.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            torch.nn.utils.parametrizations.weight_norm(m)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for (ka, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        torch.testing.assert_close(a, b, msg=ka)
    x = torch.randn(4, 3, 6, 6)
    ya, yb = ours(x), theirs(x)
    torch.testing.assert_close(ya, yb)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (name, pa), pb in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)
    _train(ours), _train(theirs)
    torch.testing.assert_close(ours(x), theirs(x))


def test_bwn_fixed_rho_keeps_norm_after_optimizer_steps():
    model = _model()
    w0 = model[0].weight.detach().clone()
    rho0 = channel_norms(w0).mean()
    apply_weight_norm(model, "bwn", exclude=("8",))
    conv = model[0]
    torch.testing.assert_close(conv.parametrizations.weight[0].rho, rho0)
    # the direction of each channel is kept, its norm becomes ρ
    torch.testing.assert_close(conv.weight, w0 / channel_norms(w0) * rho0)
    _train(model)
    assert not torch.allclose(conv.parametrizations.weight.original, w0)  # it did train
    torch.testing.assert_close(channel_norms(conv.weight).flatten(), rho0.expand(8))
    torch.testing.assert_close(conv.weight.norm(), rho0 * 8 ** 0.5)
    assert not parametrize.is_parametrized(model[8][0])


def test_bwn_learned_gain_keeps_total_norm_after_optimizer_steps():
    model = _model()
    w0 = model[3].weight.detach().clone()
    apply_weight_norm(model, "bwn", gain=True, exclude=("8",))
    conv = model[3]
    torch.testing.assert_close(conv.weight, w0)  # registration does not change the function
    norms0 = channel_norms(conv.weight).detach().flatten()
    _train(model, steps=8)
    torch.testing.assert_close(conv.weight.norm(), w0.norm())
    # the per-channel split of that norm is learned
    assert not torch.allclose(channel_norms(conv.weight).detach().flatten(), norms0, rtol=1e-4)


def test_exclude_state_dict_and_remove():
    model = apply_weight_norm(_model(), "bwn", exclude=("8",))
    names = [n for n, m in model.named_modules() if parametrize.is_parametrized(m)]
    assert names == ["0", "3"]
    _train(model)
    clone = apply_weight_norm(_model(seed=5), "bwn", exclude=("8",))
    clone.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(clone(x), model(x))
    y = model(x)
    remove_weight_norm(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    torch.testing.assert_close(model(x), y)
    with pytest.warns(UserWarning, match="classifier"):
        apply_weight_norm(_model(), "wn", exclude=("classifier",))


def test_none_is_noop_and_errors():
    model = _model()
    assert apply_weight_norm(model, "none") is model
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    with pytest.raises(ValueError, match=r"unknown weight-norm kind 'swn'.*wn, bwn, none"):
        apply_weight_norm(model, "swn")
    apply_weight_norm(model, "wn")
    with pytest.raises(ValueError, match="already has a weight parametrization"):
        apply_weight_norm(model, "bwn")
    with pytest.raises(ValueError, match="rho=-1"):
        apply_weight_norm(_model(), "bwn", rho=-1)
