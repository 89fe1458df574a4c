"""Shared by the entry points: bad input becomes one line on stderr and a non-zero exit."""
from __future__ import annotations

import sys

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


def run_or_exit(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
