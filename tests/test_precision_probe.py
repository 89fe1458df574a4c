"""The half-precision hazard counts (normmatters.norms.precision_probe) on inputs built so that the
answer is known, each checked against what float16 itself does to those numbers."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from normmatters import runs
from normmatters.norms import build_norm
from normmatters.norms.precision_probe import PrecisionProbe

H = torch.float16


def test_square_overflow_underflow_and_subnormal_counts():
    bn = build_norm("l2", 2)
    x = torch.tensor([[300.0, 1e-4], [-300.0, -1e-4], [300.0, 1e-3], [-300.0, -1e-3]]).view(4, 2, 1, 1)
    # what float16 does to these squares, independently of the probe
    assert torch.isinf(torch.tensor(300.0, dtype=H) ** 2)
    assert torch.tensor(1e-4, dtype=H) ** 2 == 0
    sq = torch.tensor(1e-3, dtype=H) ** 2
    assert 0 < sq < torch.finfo(H).tiny  # subnormal
    probe = PrecisionProbe(bn, H)
    bn(x)
    (row,) = probe.rows(step=1)
    assert (row["values"], row["square_overflow"], row["square_underflow"], row["square_subnormal"]) == (8, 4, 2, 2)
    assert probe.rows(step=2)[0]["values"] == 0  # counts restart after each rows()


def test_one_pass_variance_is_flagged_when_the_mean_dwarfs_the_spread():
    torch.manual_seed(0)
    bn = build_norm("l2", 3)
    x = torch.randn(64, 3, 4, 4)
    x[:, 1] = 100 + 0.5 * x[:, 1]    # E[x²] ≈ 1e4: float16 spacing there is 8, the variance 0.25
    x[:, 2] = 1000 + x[:, 2]         # E[x²] ≈ 1e6 overflows float16
    narrow = x[:, 1].to(H)
    onepass = (narrow * narrow).float().mean().to(H) - narrow.float().mean().to(H) ** 2
    assert abs(float(onepass) - float(x[:, 1].var(unbiased=False))) > 0.1 * float(x[:, 1].var())  # by hand
    probe = PrecisionProbe(bn, H)
    bn(x)
    (row,) = probe.rows()
    assert row["channels"] == 3 and row["onepass_bad"] == 2


def test_gradient_underflow_is_counted_and_eval_is_ignored():
    bn = build_norm("l1", 2)
    probe = PrecisionProbe(bn, H)
    x = torch.randn(8, 2, 3, 3, requires_grad=True)
    y = bn(x)
    grad = torch.full_like(y, 1e-3)
    grad[:, 0] = 1e-9             # below half of float16's smallest subnormal (5.96e-8)
    assert torch.tensor(1e-9, dtype=H) == 0
    y.backward(grad)
    (row,) = probe.rows()
    assert row["grads"] == y.numel() and row["grad_underflow"] == y.numel() // 2
    bn.eval()
    bn(x)
    assert probe.rows()[0]["values"] == 0


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_float8_hazards_match_what_the_format_does(dtype):
    """The same counts for the 8-bit floats: squares that overflow (e5m2 to inf, e4m3fn past its
    largest finite 448) and gradients that round to zero, decided here by the format's own conversion."""
    big, small_grad = {torch.float8_e4m3fn: (30.0, 1e-4), torch.float8_e5m2: (300.0, 1e-6)}[dtype]
    assert torch.tensor(big * big).to(dtype).float() != big * big and big * big > torch.finfo(dtype).max
    assert torch.tensor(small_grad).to(dtype).float() == 0 and torch.tensor(0.1).to(dtype).float() != 0
    bn = build_norm("l2", 1)
    probe = PrecisionProbe(bn, dtype)
    x = torch.tensor([big, -big, 1.0, -1.0]).view(4, 1, 1, 1).requires_grad_()
    y = bn(x)
    y.backward(torch.tensor([small_grad, small_grad, 0.1, 0.1]).view_as(y))
    (row,) = probe.rows()
    assert row["dtype"] == str(dtype).removeprefix("torch.")
    assert (row["values"], row["square_overflow"], row["grads"], row["grad_underflow"]) == (4, 2, 4, 2)


def test_a_run_logs_the_precision_table(tiny_cifar, tmp_path, compose):
    from conftest import run_dir_of
    from normmatters.train import train
    from test_train import tiny

    cfg = compose(tiny(tiny_cifar, tmp_path, "train.epochs=1", "wandb.mode=disabled", "train.log_precision=float16"))
    assert train(cfg)["status"] == "finished"
    table = runs.read_table(run_dir_of(cfg), "precision")
    assert set(table["dtype"]) == {"float16"} and table["values"].gt(0).all()
    assert {"square_overflow", "onepass_bad", "grad_underflow"} <= set(table.columns)
    assert isinstance(table, pd.DataFrame) and table["layer"].nunique() >= 7  # every BN of ResNet-20


def test_one_pass_variance_cancels_in_float16_and_not_in_float64():
    torch.manual_seed(0)
    x = (100 + 0.5 * torch.randn(64, 1, 4, 4)).double()
    true = x.var(unbiased=False).item()
    wide = build_norm("l2", 1, variance="one_pass", eps=0.0, dtype=torch.float64, affine=False)
    torch.testing.assert_close(wide(x), (x - x.mean()) / true ** 0.5)
    narrow = build_norm("l2", 1, variance="one_pass", eps=0.0, stats_dtype="float16", accum_dtype="float32", affine=False)
    xh = x.float().to(H)  # by hand: E[x²] − E[x]², each rounded to float16
    onepass = (float((xh * xh).float().mean().to(H)) - float(xh.float().mean().to(H)) ** 2)
    assert abs(onepass - true) > 0.5 * true  # the cancellation the test relies on
    y = narrow(x.float())
    assert not torch.allclose(y.double(), (x - x.mean()) / true ** 0.5, atol=0.2)
    with pytest.raises(ValueError, match="variance='one_pass' is invalid"):
        build_norm("l1", 1, variance="one_pass")


def test_loss_scaling_can_be_turned_off(tiny_cifar, tmp_path, compose):
    from conftest import run_dir_of
    from normmatters.train import train
    from test_train import tiny

    for scaling, expect in (("null", True), ("false", False)):
        cfg = compose(tiny(tiny_cifar, tmp_path / scaling, "train.epochs=1", "wandb.mode=disabled", "precision=fp16",
                           f"precision.loss_scaling={scaling}"))
        assert train(cfg)["status"] in ("finished", "diverged")
        state = torch.load(run_dir_of(cfg) / runs.CHECKPOINT, weights_only=False)
        assert ("scale" in state["scaler"]) is expect
