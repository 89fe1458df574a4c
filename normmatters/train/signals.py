"""Stop a run cleanly on SIGINT (Ctrl-C) or SIGTERM (what SLURM sends before a time limit).

The handler only records the signal; the training loop checks it after each step and stops
there, so the run is marked `interrupted` with its last end-of-epoch checkpoint intact. A second
Ctrl-C raises KeyboardInterrupt at once.
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


class StopOnSignal:
    """Context manager: ``.signum`` becomes the first SIGINT/SIGTERM received inside it."""

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

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():  # signal handlers live there only
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
