"""The cost of a whole job (one or several experiments) in one line, printed first by
``scripts/reproduce.py`` so that a user sees what a run will take before it starts."""
from __future__ import annotations

import math

from normmatters import runs

from .runner import minutes_per_run, state


def cost(exp, jobs, profile: str) -> tuple[int, int, float]:
    """(runs, runs to do, minutes) of one experiment's plan, at runner.minutes_per_run's rate."""
    todo = sum(state(j) not in runs.DONE for j in jobs)
    return len(jobs), todo, todo * minutes_per_run(exp, profile, jobs) if todo else 0.0


def duration(minutes: float) -> str:
    """'21.0 hours', '52 minutes', '0.6 minutes'; 'an unknown time' without an estimate."""
    if math.isnan(minutes):
        return "an unknown time"
    if minutes >= 120:
        return f"{minutes / 60:.1f} hours"
    return f"{minutes:.0f} minutes" if minutes >= 10 else f"{minutes:.1f} minutes"


def grand_total(planned, profile: str) -> str:
    """'4 experiments: 102 runs, 102 to do: about 21.0 hours (profile cpu)' for [(exp, jobs), ...];
    an experiment without a time estimate for the profile is named."""
    n = todo = 0
    minutes, unknown = 0.0, []
    for exp, jobs in planned:
        n_exp, todo_exp, min_exp = cost(exp, jobs, profile)
        n, todo = n + n_exp, todo + todo_exp
        if math.isnan(min_exp):
            unknown.append(exp.name)
        else:
            minutes += min_exp
    count = f"{len(planned)} experiment{'s' if len(planned) != 1 else ''}"
    line = f"{count}: {n} runs, {todo} to do: about {duration(minutes)} (profile {profile})"
    return line + (f"; no estimate for {', '.join(unknown)}" if unknown else "")
