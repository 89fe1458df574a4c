"""torch.compile: one model using every kind (and BWN) compiles without graph breaks and matches eager."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from normmatters.norms import apply_weight_norm, build_norm

pytestmark = pytest.mark.slow  # the full suite (make test-all): torch.compile warm-up


def _model() -> nn.Module:
    torch.manual_seed(0)

    def block(cin, cout, kind, **options):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), build_norm(kind, cout, **options), nn.ReLU()]

    layers = (block(3, 8, "l1") + block(8, 8, "linf") + block(8, 8, "topk", k=5) + block(8, 8, "l2")
              + block(8, 8, "mean") + [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)])
    model = nn.Sequential(*layers)
    return apply_weight_norm(model, "bwn", gain=True, exclude=("17",))


@pytest.mark.compile
def test_compiles_without_graph_breaks_and_matches_eager():
    import torch._dynamo

    torch._dynamo.reset()
    eager = _model()
    compiled_model = copy.deepcopy(eager)
    x = torch.randn(4, 3, 8, 8)
    explanation = torch._dynamo.explain(copy.deepcopy(eager))(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(compiled_model, fullgraph=True)
    for step in range(2):  # training mode: batch statistics and running-buffer updates
        xs = x + step
        ya, yb = eager(xs), compiled(xs)
        torch.testing.assert_close(yb, ya, rtol=1e-4, atol=1e-5)
        ya.square().sum().backward()
        yb.square().sum().backward()
    for (name, pa), pb in zip(eager.named_parameters(), compiled_model.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-3, atol=1e-5, msg=name)
    for (name, ba), bb in zip(eager.named_buffers(), compiled_model.buffers()):
        torch.testing.assert_close(bb, ba, rtol=1e-4, atol=1e-6, msg=name)
    eager.eval(), compiled_model.eval()
    torch.testing.assert_close(compiled(x), eager(x), rtol=1e-4, atol=1e-5)
