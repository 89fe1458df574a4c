"""Bad input gives one-line errors that name the bad value and what is valid."""
from __future__ import annotations

import pytest
import torch

from normmatters.norms import NORM_KINDS, build_norm


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(ValueError) as e:
        build_norm("l3", 8)
    msg = _one_line(e)
    assert "'l3'" in msg and all(kind in msg for kind in NORM_KINDS)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k_at_construction(k):
    with pytest.raises(ValueError) as e:
        build_norm("topk", 8, k=k)
    msg = _one_line(e)
    assert f"k={k!r}" in msg and "1 <= k <= n" in msg


def test_k_larger_than_n_at_forward():
    m = build_norm("topk", 3, k=10)
    with pytest.raises(ValueError) as e:
        m(torch.randn(2, 3, 2, 2))  # n = 8 elements per channel
    msg = _one_line(e)
    assert "k=10" in msg and "n=8" in msg


@pytest.mark.parametrize("constant", [0, -1.0, float("nan"), float("inf"), "pi"])
def test_bad_constant(constant):
    with pytest.raises(ValueError) as e:
        build_norm("l1", 4, constant=constant)
    msg = _one_line(e)
    assert f"constant={constant!r}" in msg and "> 0" in msg


def test_constant_only_for_scale_kinds():
    with pytest.raises(ValueError, match="constant=2.0 applies only to kinds l1, linf, topk"):
        build_norm("l2", 4, constant=2.0)


@pytest.mark.parametrize("kind", ["l2", "l1", "linf", "topk", "mean"])
@pytest.mark.parametrize("shape", [(4, 5, 3, 3), (4, 5), (7,)])
def test_wrong_channel_count(kind, shape):
    m = build_norm(kind, 8, k=2) if kind == "topk" else build_norm(kind, 8)
    with pytest.raises(ValueError) as e:
        m(torch.randn(shape))
    msg = _one_line(e)
    assert "8 channels" in msg and str(tuple(shape)) in msg


def test_single_value_per_channel_in_training():
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 3\)"):
        build_norm("linf", 3)(torch.randn(1, 3))


@pytest.mark.parametrize("bad", [{"momentum": 1.5}, {"eps": -1.0}, {"stats_dtype": "fp8"}])
def test_other_options(bad):
    with pytest.raises(ValueError) as e:
        build_norm("l1", 4, **bad)
    (name, value), = bad.items()
    assert f"{name}={value!r}" in _one_line(e)
