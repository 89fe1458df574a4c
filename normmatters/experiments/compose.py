"""The config scripts/train.py would see for a list of overrides (Hydra's compose API), and the
directories an experiment's runs live in."""
from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PROFILES = ("paper", "cpu", "smoke")


def compose_train(overrides):
    """The composed train config; a bad override is a one-line ValueError."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        try:
            return compose(config_name="train", overrides=list(overrides))
        except HydraException as err:
            raise ValueError(" ".join(str(err).split())) from None


_DIRS: dict[Path, set[str]] = {}


def experiment_dirs(exp) -> set[str]:
    """The names of the directories (under an out_root) that hold ``exp``'s runs, one per profile
    (composed once per experiment file and process)."""
    if exp.path in _DIRS:
        return _DIRS[exp.path]
    names = set()
    for profile in PROFILES:
        arm = exp.arms[exp.default_arms[0]]
        cfg = compose_train([*arm.overrides, *exp.overrides, f"profile={profile}", *exp.profile_overrides.get(profile, ())])
        names.add(str(cfg.name))
    _DIRS[exp.path] = names
    return names
