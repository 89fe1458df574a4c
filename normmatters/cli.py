"""Shared by the entry points: bad input becomes one line on stderr and a non-zero exit; in a sweep a
failing job is recorded and the sweep goes on (normmatters.sweep prints the summary)."""
from __future__ import annotations

import sys
import traceback

from normmatters.placement import place_job
from normmatters.io import WriteFailed
from normmatters.runs import RunLocked
from normmatters.train.signals import RunInterrupted

# ValueError includes runs.UnreadableRunFile (a damaged or changed run file, named)
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, WriteFailed)


def run_or_exit(fn, *args, **kwargs):
    """fn(...); a user error exits 2 with one line, a run directory in use 75 (RunLocked), an
    interrupted run 128 + the signal (a second Ctrl-C too: one line, no traceback)."""
    try:
        return fn(*args, **kwargs)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except RunLocked as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(RunLocked.exit_code)
    except RunInterrupted as err:
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted (SIGINT)", file=sys.stderr)
        sys.exit(130)


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except (ValueError, ImportError):
        return False


def run_recorded(fn, *args) -> dict:
    """fn(*args) for a caller that goes on after a failure (a sweep job, an experiment's run): a bad
    config prints one line, an exception its traceback, and either returns
    {"status": "failed", "error": ...}; a run directory in use by another process is reported
    (status "locked"), not trained twice. A signal (RunInterrupted) still propagates."""
    try:
        return fn(*args)
    except RunLocked as err:
        print(f"error: {err}", file=sys.stderr)
        return {"status": "locked", "error": str(err)}
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return {"status": "failed", "error": str(err)}
    except Exception as err:  # noqa: BLE001 - recorded, shown, and the caller goes on
        traceback.print_exc()
        return {"status": "failed", "error": f"{type(err).__name__}: {err}"}


def run_job(fn, cfg) -> dict:
    """One job of ``scripts/train.py``: as run_or_exit for a single run; in a multirun a failing job
    is recorded (run_recorded) so that the sweep goes on. A signal still stops the whole sweep. A job
    of a parallel sweep first takes its GPU or its share of the cores (normmatters.placement)."""
    if not _in_multirun():
        return run_or_exit(fn, cfg)
    from hydra.core.hydra_config import HydraConfig

    place_job(HydraConfig.get(), str(cfg.get("device", "auto")))
    try:
        return run_recorded(fn, cfg)
    except RunInterrupted as err:  # the sweep stops here: its summary still says what each job did
        from normmatters.sweep import summarize_stopped_sweep

        summarize_stopped_sweep(HydraConfig.get(), err)
        sys.exit(err.exit_code)
