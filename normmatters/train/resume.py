"""The command that resumes an interrupted run, printed when a signal stops it: exactly what was
run, so that pasting it continues the same run directory."""
from __future__ import annotations

import os
import shlex
import sys

ENV_READ_BY_CONFIGS = ("DATA",)  # configs/data/*.yaml read ${oc.env:DATA}: dropping it changes the config


def resume_command() -> str:
    """The interpreter that runs, this script and its arguments (a Hydra multirun job: its own
    overrides), after the environment variables the configs read."""
    try:
        from hydra.core.hydra_config import HydraConfig

        args = [sys.argv[0], *HydraConfig.get().overrides.task]
    except (ValueError, ImportError):  # not under Hydra: scripts/reproduce.py, a notebook, a test
        args = list(sys.argv)
    env = [f"{key}={shlex.quote(os.environ[key])}" for key in ENV_READ_BY_CONFIGS if os.environ.get(key)]
    return " ".join([*env, shlex.join([sys.executable, *args])])
