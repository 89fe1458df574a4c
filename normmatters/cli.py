"""Shared by the entry points: bad input becomes one line on stderr and a non-zero exit; in a sweep a
failing job is recorded and the sweep goes on (normmatters.sweep prints the summary)."""
from __future__ import annotations

import sys
import traceback

from normmatters.train.signals import RunInterrupted

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


def run_or_exit(fn, *args, **kwargs):
    """fn(...); a user error exits 2 with one line, an interrupted run with 128 + the signal."""
    try:
        return fn(*args, **kwargs)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except RunInterrupted as err:
        sys.exit(err.exit_code)


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except (ValueError, ImportError):
        return False


def run_job(fn, cfg) -> dict:
    """One job of ``scripts/train.py``: as run_or_exit for a single run; in a multirun a failing job
    (bad config, exception) prints one line and returns {"status": "failed", "error": ...} so that the
    sweep goes on. A signal still stops the whole sweep."""
    if not _in_multirun():
        return run_or_exit(fn, cfg)
    try:
        return fn(cfg)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return {"status": "failed", "error": str(err)}
    except RunInterrupted as err:
        sys.exit(err.exit_code)
    except Exception as err:  # noqa: BLE001 - recorded, shown, and the sweep goes on
        traceback.print_exc()
        return {"status": "failed", "error": f"{type(err).__name__}: {err}"}
