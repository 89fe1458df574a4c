"""The one-line config errors every package raises: the key, the value and what is valid.

Each package checks its own config group (``check_config`` beside the code that uses the values);
these helpers only keep the wording the same everywhere.
"""
from __future__ import annotations

import math
from typing import Any, Iterable


def _shown(value: Any) -> str:
    return "null" if value is None else str(value)


def one_of(key: str, value: Any, valid: Iterable) -> None:
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"{key}={value!r} is not valid; choose one of: {', '.join(map(_shown, valid))}")


def number(key: str, value: Any, *, minimum: float | None = None, above: float | None = None,
           below: float | None = None, maximum: float | None = None) -> None:
    """A finite real number (not a bool) within the given bounds."""
    bounds = [(minimum, ">=", lambda v, b: v >= b), (above, ">", lambda v, b: v > b),
              (below, "<", lambda v, b: v < b), (maximum, "<=", lambda v, b: v <= b)]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and all(bound is None or test(value, bound) for bound, _, test in bounds)
    if not ok:
        wanted = " and ".join(f"{op} {_shown(bound)}" for bound, op, _ in bounds if bound is not None)
        raise ValueError(f"{key}={value!r} is not valid; it must be a finite number{' ' + wanted if wanted else ''}")


def integer(key: str, value: Any, *, minimum: int | None = None, nullable: bool = False) -> None:
    if nullable and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        wanted = f"an integer >= {minimum}" if minimum is not None else "an integer"
        raise ValueError(f"{key}={value!r} is not valid; it must be {'null or ' if nullable else ''}{wanted}")


def boolean(key: str, value: Any, *, nullable: bool = False) -> None:
    """True or False (not 1/0, which ``one_of`` would let through since 1 == True)."""
    if nullable and value is None:
        return
    if not isinstance(value, bool):
        raise ValueError(f"{key}={value!r} is not valid; it must be {'null, ' if nullable else ''}true or false")
