"""Tests of normmatters.models: shapes, classifier, norm layers, parameter counts, init, errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import normmatters.models.init as model_init
from normmatters.models import MODEL_NAMES, build_model
from normmatters.norms import build_norm

CIFAR_MODELS = ("vgg11", "vgg16", "resnet20", "resnet32", "resnet44", "resnet56", "resnet18_cifar")
IMAGENET_MODELS = ("resnet18", "resnet50")
NORM_KINDS = ("l2", "l1", "none")

# Number of normalization layers at any width: one per conv (projection shortcuts included).
NORM_COUNTS = {
    "vgg11": 8, "vgg16": 13,
    "resnet20": 1 + 2 * 9 + 2, "resnet32": 1 + 2 * 15 + 2, "resnet44": 1 + 2 * 21 + 2,
    "resnet56": 1 + 2 * 27 + 2, "resnet18_cifar": 1 + 2 * 8 + 3,
    "resnet18": 1 + 2 * 8 + 3, "resnet50": 1 + 3 * 16 + 4,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models: intra-op threads only add contention on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_model_names():
    assert set(MODEL_NAMES) == set(CIFAR_MODELS + IMAGENET_MODELS)
    assert isinstance(MODEL_NAMES, tuple)


@pytest.mark.parametrize("norm", NORM_KINDS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shape_and_classifier(name, norm):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, norm=norm, width=0.25)
    size = 64 if name in IMAGENET_MODELS else 32
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    # The classifier is found by name and is the last (and only) Linear layer.
    assert model.classifier_name == "classifier"
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and linears[-1] is getattr(model, model.classifier_name)
    # Norm layers are what build_norm returns; convs carry a bias only without a norm.
    norm_type = type(build_norm(norm, 4))
    assert sum(type(m) is norm_type for m in model.modules()) == NORM_COUNTS[name]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == NORM_COUNTS[name]
    assert all((c.bias is not None) == (norm == "none") for c in convs)


@pytest.mark.parametrize("norm", ("linf", "topk", "mean"))
def test_other_norm_kinds_train_and_eval(norm):
    # The last VGG layers see only batch x 1 x 1 values per channel: top-k needs k <= that.
    options = {"k": 2} if norm == "topk" else None
    model = build_model("vgg11", num_classes=10, norm=norm, norm_options=options, width=0.25)
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    model.eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    norm_type = type(build_norm(norm, 4))
    assert sum(type(m) is norm_type for m in model.modules()) == NORM_COUNTS["vgg11"]


def test_vgg_features_end_at_1x1_and_backward():
    model = build_model("vgg11", num_classes=10, norm="l2", width=0.25)
    feats = model.features(torch.randn(2, 3, 32, 32))
    assert feats.shape == (2, 128, 1, 1)
    assert model.classifier.in_features == 128
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_vgg11_parameter_count():
    pytest.importorskip("torchvision")
    from torchvision.models.vgg import cfgs, make_layers

    with torch.device("meta"):  # shapes only
        model = build_model("vgg11", num_classes=10, norm="l2")
        tv_features = make_layers(cfgs["A"], batch_norm=True)
    cfg = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
    chans = [c for c in cfg if c != "M"]
    ins = [3] + chans[:-1]
    convs = sum(9 * i * o for i, o in zip(ins, chans))  # bias-free 3x3 convs
    norms = 2 * sum(chans)  # affine scale + bias per channel
    expected = convs + norms + 512 * 10 + 10
    assert expected == 9_228_362  # the authors' code, with conv biases: 9_231_114
    assert n_params(model) == expected
    # torchvision's vgg11_bn features: same convs, but with (redundant) conv biases.
    assert n_params(model) == n_params(tv_features) - sum(chans) + 512 * 10 + 10
    assert len(model.features) == len(tv_features)


def test_resnet20_parameter_count():
    model = build_model("resnet20", num_classes=10, norm="l2")
    # He et al. 2016 report 0.27M (option A, zero-padding shortcuts: 269,722); the two 1x1 conv +
    # norm projections used here add 16*32 + 2*32 + 32*64 + 2*64 = 2,752 parameters.
    assert n_params(model) == 272_474
    assert abs(n_params(model) - 0.27e6) < 0.005e6


@pytest.mark.parametrize("name", IMAGENET_MODELS)
def test_imagenet_resnet_matches_torchvision(name):
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):  # no memory, no init: only shapes are compared
        ours = build_model(name, num_classes=100, norm="l2")
        ref = getattr(torchvision.models, name)(weights=None, num_classes=100)
    assert n_params(ours) == n_params(ref)
    ours_shapes = sorted(tuple(p.shape) for p in ours.parameters())
    ref_shapes = sorted(tuple(p.shape) for p in ref.parameters())
    assert ours_shapes == ref_shapes


def test_width_scales_channels():
    model = build_model("resnet20", num_classes=10, width=0.5)
    assert model.conv1.out_channels == 8 and model.classifier.in_features == 32
    tiny = build_model("vgg11", num_classes=3, width=1e-3)  # every layer rounds up to 1 channel
    assert tiny.classifier.in_features == 1
    assert tiny(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_he_init():
    torch.manual_seed(0)
    model = build_model("vgg11", num_classes=10, norm="l2")
    conv = model.features[-4]  # last conv: 512 -> 512, fan_out = 512 * 9
    assert isinstance(conv, nn.Conv2d)
    expected_std = (2.0 / (512 * 9)) ** 0.5
    assert abs(conv.weight.std().item() / expected_std - 1) < 0.02
    norm_type = type(build_norm("l2", 4))
    for m in model.modules():
        if type(m) is norm_type:
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_norm_options_reach_every_build_norm(monkeypatch):
    calls = []

    def spy(kind, num_features, **options):
        calls.append((kind, options))
        return build_norm(kind, num_features, **options)

    monkeypatch.setattr(model_init, "build_norm", spy)
    build_model("resnet20", num_classes=10, norm="l2", norm_options={"eps": 1e-3}, width=0.25)
    assert len(calls) == NORM_COUNTS["resnet20"]
    assert all(kind == "l2" and opts == {"eps": 1e-3} for kind, opts in calls)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="vgg19", num_classes=10), "vgg19"),
        (dict(name="resnet20", num_classes=0), "0"),
        (dict(name="resnet20", num_classes=-3), "-3"),
        (dict(name="resnet20", num_classes=10, width=0), "0"),
        (dict(name="resnet20", num_classes=10, width=-0.5), "-0.5"),
    ],
)
def test_bad_inputs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(**kwargs)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        build_model("alexnet", num_classes=10)
    msg = str(err.value)
    assert "\n" not in msg and all(n in msg for n in MODEL_NAMES)


def test_unknown_norm_raises():
    with pytest.raises(ValueError):
        build_model("vgg11", num_classes=10, norm="no-such-norm", width=0.25)
