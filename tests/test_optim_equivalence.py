"""PAPER.md §1, exact form: scaling the scale-invariant weights by c at init and giving them
LR c²η and WD λ/c² leaves the function computed by the network unchanged at every step."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from normmatters.scale_invariant import scale_invariant_weights
from normmatters.norms import build_norm
from normmatters.optim import build_param_groups

EPS = 1e-30  # the normalization's epsilon, negligible against any variance in float64
LR, WD, STEPS = 0.1, 5e-3, 10


class TinyBNNet(nn.Module):
    """conv → BN → ReLU → conv → BN → ReLU → pool → linear, built with the project's norm layers."""

    classifier_name = "fc"

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn1 = build_norm("l2", 6, eps=EPS)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1, bias=False)
        self.bn2 = build_norm("l2", 8, eps=EPS)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def _vgg_tiny():
    models = pytest.importorskip("normmatters.models")
    return models.build_model("vgg11", 5, norm="l2", norm_options={"eps": EPS}, width=1 / 16)


def _train(model, c, lr_mult, wd_mult, momentum, batches):
    """Scale the invariant weights by c, then take SGD steps; return logits before each step and weights."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for p in scale_invariant_weights(model).values():
            p.mul_(c)
    groups = build_param_groups(model, lr=LR, weight_decay=WD, wd_scope="all",
                                invariant_lr_mult=lr_mult, invariant_wd_mult=wd_mult)
    opt = torch.optim.SGD(groups, lr=LR, momentum=momentum)
    logits = []
    for x, y in batches:
        out = model(x)
        logits.append(out.detach().clone())
        opt.zero_grad()
        nn.functional.cross_entropy(out, y).backward()
        opt.step()
    logits.append(model(batches[0][0]).detach().clone())
    return logits, {n: p.detach().clone() for n, p in scale_invariant_weights(model).items()}


def _batches(size, n=STEPS, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 3, size, size, generator=g, dtype=torch.float64),
             torch.randint(0, 5, (6,), generator=g)) for _ in range(n)]


class Case:
    """A network, its batches, and the unscaled reference runs (computed once per momentum)."""

    def __init__(self, net, batches):
        self.net, self.batches, self._ref = net, batches, {}

    def reference(self, momentum):
        if momentum not in self._ref:
            self._ref[momentum] = _train(self.net, 1.0, 1.0, 1.0, momentum, self.batches)
        return self._ref[momentum]


@pytest.fixture(scope="module", params=["tiny", "vgg11"])
def case(request):
    torch.manual_seed(0)
    if request.param == "tiny":
        return Case(TinyBNNet().double().train(), _batches(6))
    return Case(_vgg_tiny().double().train(), _batches(32, n=5))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("c", [0.5, 10.0])
def test_scaled_invariant_weights_compute_the_same_function(case, c, momentum):
    assert scale_invariant_weights(case.net), "the test net must have scale-invariant weights"
    ref_logits, ref_w = case.reference(momentum)
    logits, w = _train(case.net, c, c * c, 1.0 / (c * c), momentum, case.batches)
    for step, (a, b) in enumerate(zip(ref_logits, logits)):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9, msg=lambda m: f"step {step}: {m}")
    # the weights themselves moved: the check is not vacuous
    assert (ref_logits[-1] - ref_logits[0]).abs().max() > 1e-2
    for name in ref_w:
        torch.testing.assert_close(w[name], c * ref_w[name], rtol=1e-10, atol=0.0)


@pytest.mark.parametrize("c", [0.5, 10.0])
def test_without_the_lr_change_the_runs_diverge(case, c):
    """Negative control: scaling alone (same LR and WD) changes the effective step, so the logits differ."""
    ref_logits, _ = case.reference(0.9)
    logits, _ = _train(case.net, c, 1.0, 1.0, 0.9, case.batches)
    torch.testing.assert_close(logits[0], ref_logits[0], rtol=1e-6, atol=1e-9)  # same function at init
    assert (logits[-1] - ref_logits[-1]).abs().max() > 1e-3
