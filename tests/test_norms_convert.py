"""convert_norms on a model from outside the package (torchvision's ResNet-18)."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from normmatters.norms import LpBatchNorm, build_norm, convert_norms


def resnet_with_stats(seed=0):
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=10)
    for m in model.modules():  # non-trivial affine parameters and running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("kind", ["l1", "linf", "topk", "l2"])
def test_every_batch_norm_is_replaced_and_eval_output_is_kept(kind):
    original = resnet_with_stats().eval()
    converted = convert_norms(resnet_with_stats(), kind).eval()
    bns = [m for m in converted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    lps = [m for m in converted.modules() if isinstance(m, LpBatchNorm)]
    assert not bns and len(lps) == 20 and all(m.kind == kind for m in lps)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        # eval: (x - mu)/(s + eps) with s = sqrt(var + eps) - eps is the old (x - mu)/sqrt(var + eps)
        torch.testing.assert_close(converted(x), original(x), rtol=1e-4, atol=1e-5)


def test_l2_conversion_trains_like_the_original():
    original, converted = resnet_with_stats().train(), convert_norms(resnet_with_stats(), "l2").train()
    x = torch.randn(4, 3, 64, 64)
    torch.testing.assert_close(converted(x), original(x), rtol=1e-5, atol=1e-5)
    a = dict(original.named_buffers())["bn1.running_var"]
    b = dict(converted.named_buffers())["bn1.running_var"]
    torch.testing.assert_close(b, a)


def test_round_trip_maps_the_running_variance_back():
    bn = nn.BatchNorm2d(3, eps=1e-3)
    bn.running_var.copy_(torch.tensor([0.5, 1.0, 4.0]))
    back = convert_norms(convert_norms(bn, "l1"), "l2")
    torch.testing.assert_close(back.running_var, bn.running_var)
    assert back.eps == 1e-3


def test_options_and_unknown_options():
    model = convert_norms(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), "topk", k=3)
    assert model[1].k == 3
    with pytest.raises(ValueError, match=r"unknown norm option 'kk' \(value 3\); valid: eps, momentum"):
        convert_norms(nn.Sequential(nn.BatchNorm2d(4)), "topk", kk=3)
    with pytest.raises(ValueError, match="unknown norm option 'size'"):
        build_norm("l1", 4, size=2)
