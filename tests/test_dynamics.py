"""Weight-norm dynamics: the update angle and the per-layer rows the training loop logs."""
import math

import pytest
import torch

from normmatters.dynamics import AngleProbe, angle_between, layer_rows


@pytest.mark.parametrize("theta", [1e-7, 1e-4, 0.3, math.pi / 2, 3.0])
def test_angle_between_rotation_in_a_plane(theta):
    torch.manual_seed(0)
    e1, e2 = torch.linalg.qr(torch.randn(1000, 2, dtype=torch.float64)).Q.T  # orthonormal pair
    a = 5.0 * e1
    b = 0.2 * (math.cos(theta) * e1 + math.sin(theta) * e2)  # rotated and rescaled
    assert angle_between(a, b) == pytest.approx(theta, rel=1e-5)


def test_angle_ignores_scale():
    w = torch.randn(64, 3, 3, 3)
    assert angle_between(w, 7.0 * w) == pytest.approx(0.0, abs=1e-7)


def test_probe_sees_a_small_sgd_step_in_float32():
    # A step that turns the weight by ~1e-5 rad: arccos(cos) in float32 would report 0.
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(32, 16))
    opt = torch.optim.SGD([w], lr=1e-5)
    probe = AngleProbe({"w": w})
    w.grad = torch.randn_like(w)
    g = w.grad.clone()
    before = w.detach().double().clone()
    probe.before()
    opt.step()
    got = probe.after()["w"]
    expected = angle_between(before, before - 1e-5 * g.double())
    assert got > 0 and got == pytest.approx(expected, rel=1e-2)
    rows = layer_rows({"w": w}, {"w": 1e-5}, epoch=1, step=1, angles={"w": got})
    assert rows[0]["angle"] == got and rows[0]["eff_step"] > 0
