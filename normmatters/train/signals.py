"""Stop a run cleanly on SIGINT (Ctrl-C) or SIGTERM (what SLURM sends before a time limit).

The handler only records the signal; the training loop checks it after each step and stops
there, so the run is marked `interrupted` with its last end-of-epoch checkpoint intact. A second
Ctrl-C raises KeyboardInterrupt at once.

Inside a submitit job (hydra/launcher=submitit_*), SIGTERM stays with submitit: it ignores SIGTERM
on purpose (a preempted SLURM job may get SIGTERM before the signal submitit acts on, USR2) and on
USR2 checkpoints and requeues the job, which then resumes from the last end-of-epoch checkpoint.
"""
from __future__ import annotations

import signal
import threading


class RunInterrupted(BaseException):
    """Raised after a run stopped on a signal; a BaseException so that sweeps stop too."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


def _submitit_handles(signum: int) -> bool:
    """Whether submitit's job runner installed this signal's handler in this process."""
    return (getattr(signal.getsignal(signum), "__module__", None) or "").startswith("submitit.")


class StopOnSignal:
    """Context manager: ``.signum`` becomes the first SIGINT/SIGTERM received inside it (SIGTERM: unless
    submitit handles it)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # signal handlers live there only
            ours = [s for s in self.SIGNALS if not _submitit_handles(s)]
            self._previous = {s: signal.signal(s, self._handle) for s in ours}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
