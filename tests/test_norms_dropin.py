"""convert_norms as a drop-in for stock torchvision models, whose norms are followed by in-place
activations: resnet18 and vgg11_bn (ReLU(inplace=True)), mobilenet_v2 (ReLU6(inplace=True)),
efficientnet_b0 (SiLU(inplace=True)), each × l1, linf, topk, mean.

The fused kernels (C++ on CPU) are compared with the unfused path (``fused=False``: the equations
differentiated by autograd) at the same weights, in float64. Why float64: at these sizes the last
layers normalize 4 values per channel (a batch of 4 at 32 × 32), where a channel that is all zero
after ReLU6 has scale 0 and the norm divides by ε, amplifying rounding 1/ε = 10⁵ times, and L∞'s
gradient follows whichever element is largest: in float32 the unfused path disagrees with itself
(contiguous against channels_last) by up to 100 % there, so float32 is no yardstick; in float64 the
two paths agree to 1e-9. One thread: on 2 busy cores, OpenMP's threads make float64 depthwise
convolutions 25 times slower (13 s a step against 0.5 s).
"""
from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from conftest import REPO
from dropin_ddp_worker import BATCH, KINDS, batches, resnet, train
from normmatters.norms import LpBatchNorm, convert_norms, kernels

ARCHS = ("resnet18", "vgg11_bn", "mobilenet_v2", "efficientnet_b0")
INPLACE = (nn.ReLU, nn.ReLU6, nn.SiLU)
OPTIONS = {"topk": {"k": 3}}  # n = 4 values per channel in the last layers of a 4 × 3 × 32 × 32 batch
STEPS, LR = 2, 0.05
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cpp():
    if kernels.cpu_module() is None:
        pytest.skip("no C++ toolchain: the CPU kernels could not be built")


def architecture(arch: str) -> nn.Module:
    """The torchvision model for 10 classes. vgg11_bn's classifier (119M of its 133M parameters, no
    norm) is one linear layer here, so that float64 copies of the model stay small."""
    model = getattr(torchvision.models, arch)(num_classes=10)
    if arch == "vgg11_bn":
        model.avgpool, model.classifier = nn.AdaptiveAvgPool2d(1), nn.Linear(512, 10)
    return model


def stock(arch: str) -> nn.Module:
    """The model with non-trivial affine parameters and running statistics."""
    torch.manual_seed(0)
    model = architecture(arch)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                C = m.num_features
                m.weight.copy_(torch.rand(C, generator=g) + 0.5)
                m.bias.copy_(torch.rand(C, generator=g) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(C, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(C, generator=g) * 1.5 + 0.5)
                m.num_batches_tracked.fill_(7)
    return model


def converted(arch: str, kind: str, dtype=torch.float64) -> nn.Module:
    model = convert_norms(stock(arch), kind, **OPTIONS.get(kind, {})).to(dtype)
    assert any(isinstance(m, INPLACE) and m.inplace for m in model.modules()), f"{arch}: no in-place activation"
    return model


def set_fused(model: nn.Module, fused: bool) -> None:
    for m in model.modules():
        if isinstance(m, LpBatchNorm):
            m.fused = fused


def data(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 32, 32, generator=g, dtype=dtype), torch.randint(0, 10, (4,), generator=g)


def step(model, x, y, seed: int, params=None):
    """Loss and gradients (of ``params``' parameters, default the model's) of one training step;
    dropout and stochastic depth drawn from ``seed``."""
    params = model if params is None else params
    torch.manual_seed(seed)
    params.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in params.named_parameters()}


def state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_grads_close(got: dict, want: dict, rtol: float, what: str) -> None:
    """Every parameter's gradient within rtol of the reference's, relative to its own norm or, for a
    gradient that is zero in exact arithmetic (a convolution's bias before a norm), to 1e-6 of the
    whole gradient's norm."""
    total = torch.cat([g.flatten() for g in want.values()]).norm()
    for name, g in want.items():
        assert torch.isfinite(got[name]).all(), f"{what}: non-finite gradient of {name}"
        err = (got[name] - g).norm() / (g.norm() + 1e-6 * total)
        assert err < rtol, f"{what}: gradient of {name} off by {err:.2e} (relative)"


def assert_buffers_close(got: dict, want: dict, what: str) -> None:
    for name, b in want.items():
        if b.is_floating_point():
            torch.testing.assert_close(got[name], b, rtol=1e-8, atol=1e-9, msg=lambda m: f"{what}: {name}: {m}")
        else:
            assert torch.equal(got[name], b), f"{what}: {name}"


# ----------------------------------------------------------------------------- 16 pairs, eager
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arch", ARCHS)
def test_stock_model_trains_fused_like_unfused(cpp, arch, kind):
    """Two SGD steps; at each, from the same weights and buffers: the fused loss, gradients and
    running statistics equal the unfused ones, in contiguous and channels_last layouts; then eval."""
    model = converted(arch, kind)
    x, y = data()
    for k in range(STEPS):
        start = state(model)
        set_fused(model, False)
        loss_u, grads_u = step(model, x, y, seed=k)
        after_u = state(model)
        for layout in ("contiguous", "channels_last"):
            model.load_state_dict(start)
            set_fused(model, True)
            if layout == "channels_last":
                model.to(memory_format=torch.channels_last)
                xs = x.contiguous(memory_format=torch.channels_last)
            else:
                xs = x
            loss, grads = step(model, xs, y, seed=k)
            model.to(memory_format=torch.contiguous_format)
            what = f"{arch} {kind} step {k} {layout}"
            assert torch.isfinite(loss), what
            torch.testing.assert_close(loss, loss_u, rtol=1e-10, atol=0, msg=what)
            assert_grads_close(grads, grads_u, 1e-7, what)
            assert_buffers_close(state(model), after_u, what)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.sub_(LR * grads[name])
    model.eval()
    before = state(model)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    assert_buffers_close(state(model), before, f"{arch} {kind} eval")


@pytest.mark.parametrize("kind", KINDS)
def test_float32_training_is_finite(cpp, kind):
    """What a user runs: float32, the fused kernels, two steps of every model."""
    for arch in ARCHS:
        model = converted(arch, kind, torch.float32)
        x, y = data(torch.float32)
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        for k in range(STEPS):
            torch.manual_seed(k)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            assert torch.isfinite(loss), (arch, kind, k)
            assert all(torch.isfinite(p.grad).all() for p in model.parameters()), (arch, kind, k)
            opt.step()


# ----------------------------------------------------------------------------- conversion
@pytest.mark.parametrize("arch", ARCHS)
def test_conversion_keeps_statistics_and_parameters_and_converts_back(arch):
    original = stock(arch).eval()
    bns = {n: m for n, m in original.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    x = data(torch.float32)[0]
    with torch.no_grad():
        want = original(x)
    for kind in KINDS:
        model = convert_norms(copy.deepcopy(original), kind, **OPTIONS.get(kind, {}))
        layers = dict(model.named_modules())
        for name, bn in bns.items():
            new = layers[name]
            assert isinstance(new, LpBatchNorm) and new.kind == kind
            assert new.eps == bn.eps and new.momentum == bn.momentum
            torch.testing.assert_close(new.bias, bn.bias, rtol=0, atol=0)
            if kind != "mean":  # mean-only has no scale, hence no weight
                torch.testing.assert_close(new.weight, bn.weight, rtol=0, atol=0)
                torch.testing.assert_close(new.running_scale, (bn.running_var + bn.eps).sqrt() - bn.eps)
            torch.testing.assert_close(new.running_mean, bn.running_mean, rtol=0, atol=0)
            assert new.num_batches_tracked == bn.num_batches_tracked
        if kind == "mean":
            continue
        with torch.no_grad():  # eval: (x − μ)/(s + ε) with s = √(var + ε) − ε is the original layer
            torch.testing.assert_close(model.eval()(x), want, rtol=1e-4, atol=1e-4)
        back = convert_norms(model, "l2")  # state_dict keys of nn.BatchNorm: loads into the stock model
        restored = architecture(arch).eval()
        restored.load_state_dict(back.state_dict(), strict=True)
        for key, value in original.state_dict().items():
            torch.testing.assert_close(restored.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)
        with torch.no_grad():
            torch.testing.assert_close(restored(x), want, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- torch.compile
MIXED = {"bn1": "l1", "layer1": "l1", "layer2": "linf", "layer3": "topk", "layer4": "mean"}


def mixed_resnet() -> nn.Module:
    """ResNet-18 with every kind, one per stage, so that one compilation (minutes on 2 CPU cores)
    covers them all."""
    model = stock("resnet18")
    for name, kind in MIXED.items():
        setattr(model, name, convert_norms(getattr(model, name), kind, **OPTIONS.get(kind, {})))
    return model.double()


@pytest.mark.compile
def test_compiled_stock_model_equals_unfused_eager(cpp):
    """torch.compile (inductor, no graph break) of ResNet-18 with fused norms of every kind and its
    in-place ReLUs: two training steps equal eager unfused ones."""
    import torch._dynamo

    torch._dynamo.reset()
    eager = mixed_resnet()
    assert {m.kind for m in eager.modules() if isinstance(m, LpBatchNorm)} == set(KINDS)
    set_fused(eager, False)
    model = copy.deepcopy(eager)
    set_fused(model, True)
    compiled = torch.compile(model, fullgraph=True)
    x, y = data()
    for k in range(STEPS):
        loss_u, grads_u = step(eager, x, y, seed=k)
        loss, grads = step(compiled, x, y, seed=k, params=model)
        what = f"compiled resnet18 step {k}"
        torch.testing.assert_close(loss, loss_u, rtol=1e-9, atol=0, msg=what)
        assert_grads_close(grads, grads_u, 1e-7, what)
        assert_buffers_close(state(model), state(eager), what)
        with torch.no_grad():
            for (name, p), q in zip(eager.named_parameters(), model.parameters()):
                p.sub_(LR * grads_u[name])
                q.sub_(LR * grads[name])
    eager.eval(), model.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- torchrun, gloo
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_synchronized_statistics_under_torchrun_equal_one_process(tmp_path):
    """2 processes (gloo), each half the batch, norms synchronized: after two DDP steps every weight
    and running statistic equals one process's on the whole batch (fused kernels)."""
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(REPO / "tests" / "dropin_ddp_worker.py"),
           str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = torch.load(out)
    global_batch = batches()
    assert global_batch[0][0].shape[0] == BATCH
    for kind in KINDS:
        model = resnet(kind)
        train(model, global_batch)
        want = state(model)
        for key, value in want.items():
            got = results[kind][key]
            if value.is_floating_point():
                torch.testing.assert_close(got, value, rtol=1e-7, atol=1e-10, msg=lambda m: f"{kind} {key}: {m}")
            else:
                assert torch.equal(got, value), (kind, key)
