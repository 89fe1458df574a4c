"""The config scripts/train.py would see for a list of overrides (Hydra's compose API)."""
from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def compose_train(overrides):
    """The composed train config; a bad override is a one-line ValueError."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        try:
            return compose(config_name="train", overrides=list(overrides))
        except HydraException as err:
            raise ValueError(" ".join(str(err).split())) from None
