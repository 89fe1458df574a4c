"""The table of norm kinds (norms/kinds.py): each row's statistic, constant, running buffer and rank
combination against values computed here with numpy; the layers follow the table (a new row is a
new kind); the C++ kernels take their code-path ids from the table alone."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from conftest import REPO
from normmatters.norms import LpBatchNorm, build_norm, kernels
from normmatters.norms.kinds import KERNELS, KINDS, NORM_KINDS, NormKind, Statistic, norm_kind, square

K = 3
# the statistic of each kind on a (C, n) array of centred values d, written out independently
NUMPY = {
    "l2": lambda d: (d ** 2).mean(1),
    "l1": lambda d: np.abs(d).mean(1),
    "linf": lambda d: np.abs(d).max(1),
    "topk": lambda d: -np.sort(-np.abs(d), axis=1)[:, :K].mean(1),
}
REDUCE = {"mean": lambda t, k: t.mean(1), "max": lambda t, k: t.amax(1),
          "top_mean": lambda t, k: t.topk(k, dim=1).values.mean(1)}


def c_linf(n):
    return 0.5 * (1 + math.sqrt(math.pi * math.log(4))) / math.sqrt(2 * math.log(n))


def _centred(seed=0, C=4, n=50):
    d = np.random.default_rng(seed).normal(size=(C, n)) * 2 + 0.3
    return d - d.mean(1, keepdims=True)


def test_the_kinds_and_none():
    assert NORM_KINDS == ("l2", "l1", "linf", "topk", "mean", "none")
    assert KINDS["mean"].statistic is None and norm_kind("TopK") is KINDS["topk"]
    with pytest.raises(ValueError, match=r"^unknown norm kind 'none'; valid kinds: l2, l1, linf, topk, mean$"):
        norm_kind("none")  # no layer: build_norm gives nn.Identity
    assert isinstance(build_norm("none", 4), torch.nn.Identity)


@pytest.mark.parametrize("kind", NUMPY)
def test_statistic_of_each_kind(kind):
    d = _centred()
    statistic = KINDS[kind].statistic
    got = REDUCE[statistic.reduce](statistic.of(torch.from_numpy(d)), K)
    np.testing.assert_allclose(got.numpy(), NUMPY[kind](d), rtol=1e-12)


def test_constants_buffers_combination_and_kernels():
    n = 1000
    constants = {name: None if kind.constant is None else kind.constant(n) for name, kind in KINDS.items()}
    assert constants == pytest.approx({"l2": None, "l1": math.sqrt(math.pi / 2), "linf": c_linf(n),
                                       "topk": c_linf(n), "mean": None})
    assert {name: kind.combine for name, kind in KINDS.items()} == {
        "l2": "sum", "l1": "sum", "linf": "max", "topk": "top-k", "mean": None}
    assert {name: kind.running for name, kind in KINDS.items()} == {
        "l2": "running_var", "l1": "running_scale", "linf": "running_scale", "topk": "running_scale", "mean": None}
    assert {name: kind.kernel for name, kind in KINDS.items()} == {
        "l2": None, "l1": KERNELS["L1"], "linf": KERNELS["TOPK"], "topk": KERNELS["TOPK"], "mean": KERNELS["MEAN"]}
    assert [kind.kernel_k(7) for kind in KINDS.values()] == [1, 1, 1, 7, 1]  # L∞ is top-1
    with pytest.raises(ValueError, match=r"^reduce='median' is invalid; valid: mean, max, top_mean$"):
        Statistic(square, "median")


@pytest.mark.parametrize("kind", ["l2", "l1", "linf", "topk", "mean"])
@pytest.mark.parametrize("fused", [False, True])
def test_layers_keep_the_tables_running_statistic(kind, fused):
    """One batch at momentum 1: running_mean is the batch mean, the kind's buffer C(n)·statistic
    (l2: the unbiased variance); the buffers are those the table names."""
    C, n_per = 4, (10, 5)
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(n_per[0], C, n_per[1])) * 2 + 0.3)
    layer = build_norm(kind, C, momentum=1.0, dtype=torch.float64, fused=fused, **({"k": K} if kind == "topk" else {}))
    layer(x)
    rows = x.transpose(0, 1).reshape(C, -1).numpy()
    n = rows.shape[1]
    np.testing.assert_allclose(layer.running_mean.numpy(), rows.mean(1), rtol=1e-12)
    buffers = {name for name, _ in layer.named_buffers()} - {"running_mean", "num_batches_tracked"}
    assert buffers == ({KINDS[kind].running} if KINDS[kind].running else set())
    d = rows - rows.mean(1, keepdims=True)
    if kind == "l2":
        np.testing.assert_allclose(layer.running_var.numpy(), NUMPY[kind](d) * n / (n - 1), rtol=1e-12)
    elif kind != "mean":
        constant = math.sqrt(math.pi / 2) if kind == "l1" else c_linf(n)
        np.testing.assert_allclose(layer.running_scale.numpy(), constant * NUMPY[kind](d), rtol=1e-12)


def test_a_new_row_is_a_new_kind(monkeypatch):
    """A kind added to the table alone: the layer normalizes by C·mean((x − μ)²) + ε."""
    monkeypatch.setitem(KINDS, "msq", NormKind("msq", Statistic(square, "mean"), lambda n: 2.0,
                                              running="running_scale"))
    layer = LpBatchNorm(3, kind="msq", affine=False, dtype=torch.float64)
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(8, 3, 4)))
    rows = x.transpose(0, 1).reshape(3, -1).numpy()
    d = rows - rows.mean(1, keepdims=True)
    scale = 2.0 * (d ** 2).mean(1)
    expected = (x.numpy() - rows.mean(1)[None, :, None]) / (scale[None, :, None] + layer.eps)
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(layer.running_scale.numpy(), 0.9 + 0.1 * scale, rtol=1e-12)


def test_the_cpp_kernels_take_their_ids_from_the_table():
    """cpu_lp.h has no second copy of the ids: its enum is the -D defines the build passes from KERNELS."""
    header = (REPO / "normmatters" / "norms" / "kernels" / "cpu_lp.h").read_text()
    enum = re.search(r"enum Kind : int64_t \{([^}]*)\}", header).group(1)
    assert not re.search(r"=\s*\d", enum), enum
    assert sorted(re.findall(r"NMLP_KERNEL_(\w+)", enum)) == sorted(KERNELS)
    cflags, _ = kernels._flags()
    assert {f"-DNMLP_KERNEL_{name}={value}" for name, value in KERNELS.items()} <= set(cflags)
    cpp = kernels.cpu_module()
    if cpp is None:
        pytest.skip("no C++ toolchain: the CPU kernels could not be built")
    x = torch.randn(6, 2, 5, dtype=torch.float64)
    _, _, scale, aux, idx = cpp.forward(x, None, None, KERNELS["MEAN"], 0.0, 1.0, 1, 6)
    assert not scale.any() and aux.numel() == 0 and idx.numel() == 0
    _, _, scale, aux, idx = cpp.forward(x, None, None, KERNELS["L1"], 0.0, 1.0, 1, 6)
    torch.testing.assert_close(scale, (x - x.mean((0, 2), keepdim=True)).abs().mean((0, 2)))
    assert aux.shape == (2,) and idx.numel() == 0
    _, _, scale, aux, idx = cpp.forward(x, None, None, KERNELS["TOPK"], 0.0, 1.0, 3, 6)
    top = (x - x.mean((0, 2), keepdim=True)).abs().transpose(0, 1).reshape(2, -1).topk(3, dim=1).values.mean(1)
    torch.testing.assert_close(scale, top)
    assert aux.shape == idx.shape == (2, 3)
