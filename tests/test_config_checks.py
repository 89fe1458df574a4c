"""Each config group is checked by the package that uses it: the valid values in an error are the
owner's own list, every listed value passes, and a bad value is one line naming the key."""
from __future__ import annotations

import pytest

from normmatters import data, models, norms, optim
from normmatters.train import build
from normmatters.train.validate import validate

# key, a bad value, the owner's list of valid values
OWNED = [
    ("optim.wd_scope", "bogus", optim.WD_SCOPES),
    ("optim.schedule", "bogus", optim.SCHEDULES),
    ("optim.control", "bogus", optim.CONTROLS),
    ("optim.reference_timing", "bogus", (None, *optim.REFERENCE_TIMINGS)),
    ("model.name", "bogus", models.MODEL_NAMES),
    ("norm.kind", "bogus", norms.NORM_KINDS),
    ("weight_norm.kind", "bogus", norms.WEIGHT_NORM_KINDS),
    ("device", "bogus", build.DEVICES),
    ("data.name", "bogus", tuple(data.DATASETS)),
    ("precision.autocast", "bogus", tuple(build.AUTOCAST)),
]


def shown(values) -> str:
    return ", ".join("null" if v is None else str(v) for v in values)


@pytest.mark.parametrize("key,bad,valid", OWNED, ids=[k for k, _, _ in OWNED])
def test_error_lists_exactly_the_owners_values(compose, tmp_path, key, bad, valid):
    with pytest.raises(ValueError) as err:
        validate(compose([f"out_root={tmp_path}", f"{key}={bad}"]))
    message = str(err.value)
    assert "\n" not in message and f"{key}='{bad}'" in message
    assert message.endswith(f"choose one of: {shown(valid)}")


@pytest.mark.parametrize("key,bad,valid", OWNED, ids=[k for k, _, _ in OWNED])
def test_every_value_the_owner_lists_passes_its_check(compose, tmp_path, key, bad, valid):
    for value in valid:
        if (key, value) in (("device", "cuda"), ("data.name", "imagenet")):
            continue  # needs a GPU; needs a data.path (tests/test_data.py)
        extra = ["optim.reference=somewhere"] if key == "optim.control" else []
        validate(compose([f"out_root={tmp_path}", f"{key}={'null' if value is None else value}", *extra]))


@pytest.mark.parametrize("overrides,needle", [
    (["weight_norm=bwn", "+weight_norm.options.rho=-1"], "weight_norm.options: rho=-1"),
    (["weight_norm=wn", "+weight_norm.options.bogus=1"], "weight_norm.options: "),
    (["precision.norm_stats_dtype=float8"], "precision.norm_stats_dtype='float8'"),
    (["+norm.options.bogus=3"], "norm.options: unknown norm option 'bogus'"),
    (["optim.momentum=1"], "optim.momentum=1"),
    (["optim.milestones=[3,0]"], "optim.milestones[1]=0"),
    (["train.epochs=0"], "train.epochs=0"),
    (["train.flush_denormal=sometimes"], "train.flush_denormal='sometimes'"),
    (["train.flush_denormal=1"], "train.flush_denormal=1"),
    (["train.sync_norm=0"], "train.sync_norm=0"),
    (["model.width=-1"], "model.width=-1"),
    (["optim.control=norm_schedule", "optim.reference=somewhere", "optim.schedule=cosine"],
     "optim.schedule='cosine' is not valid with optim.control='norm_schedule'"),
    (["optim.norm_schedule_drop_factor=0"], "optim.norm_schedule_drop_factor=0"),
])
def test_bad_values_of_each_group_are_one_line(compose, tmp_path, overrides, needle):
    with pytest.raises(ValueError) as err:
        validate(compose([f"out_root={tmp_path}", *overrides]))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_group_is_checked_by_its_package_alone():
    from omegaconf import OmegaConf

    good = OmegaConf.create({"lr": 0.1, "weight_decay": 0, "momentum": 0.9, "wd_scope": "all", "schedule": "step",
                             "gamma": 0.1, "milestones": [2], "control": "none", "reference": None})
    optim.check_config(good)
    with pytest.raises(ValueError, match=r"optim.gamma=1.5 is not valid"):
        optim.check_config(OmegaConf.merge(good, {"gamma": 1.5}))
    with pytest.raises(ValueError, match=r"model.width=0 is not valid"):
        models.check_config(OmegaConf.create({"name": "vgg11", "width": 0}))


def test_start_up_returns_the_groups_typed_and_the_builders_take_them(compose, tmp_path):
    import dataclasses

    import torch

    checked = validate(compose([f"out_root={tmp_path}", "norm=l1", "precision.norm_stats_dtype=float64",
                                "train.epochs=3", "optim.control=norm_schedule", "optim.reference=somewhere"]))
    assert (checked.model.name, checked.norm.kind, checked.weight_norm.kind) == ("resnet20", "l1", "none")
    assert checked.norm.options["stats_dtype"] == "float64" and checked.data.batch_size == 128
    assert (checked.optim.epochs, checked.optim.control, checked.optim.norm_schedule_drop_factor) == (3, "norm_schedule", 10.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        checked.optim.lr = 1.0
    model = build.model_from_config(checked.model, checked.norm, checked.weight_norm, checked.data.num_classes)
    optimizer = optim.build_optimizer(model, checked.optim)
    assert [g["scheduled"] for g in optimizer.param_groups if g["invariant"]] == [False]  # norm_schedule's group
    scheduler = optim.build_scheduler(optimizer, checked.optim, steps_per_epoch=2, epochs=3)
    assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
