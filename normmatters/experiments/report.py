"""Write an experiment's figure and claims table beside its runs, from the logged tables only."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from normmatters.plots import (claims_markdown, paired_final_gaps, paired_markdown, plot_norm_dynamics, plot_wd_arms,
                               wd_claims)
from normmatters.plots.runaway import BASELINE, FACTOR, FROZEN_RTOL, runaway_markdown, runaway_table
from normmatters.runs import atomic_write_bytes


def write_wd_report(arms: Mapping[str, Iterable[Path]], out_dir: Path) -> list[Path]:
    """figure.png (test accuracy per arm, and the paired gap to WD on), norms.png (channel norms of
    every scale-invariant layer), claims.md (verdict table, per-seed paired gaps, runaway channels) and claims.csv
    (the verdict table); each written atomically. Returns the four paths."""
    out_dir = Path(out_dir)
    figure, norms = out_dir / "figure.png", out_dir / "norms.png"
    atomic_write_bytes(figure, lambda p: plot_wd_arms(arms).savefig(p, dpi=150, format="png"))
    atomic_write_bytes(norms, lambda p: plot_norm_dynamics(arms).savefig(p, dpi=120, format="png"))
    claims = wd_claims(arms)
    text = claims_markdown(claims) + (
        "\nFinal test accuracy minus that of the WD-on run with the same seed (points):\n\n"
        + paired_markdown(paired_final_gaps(arms)))
    if BASELINE in arms:
        text += (f"\nRunaway channels: a channel norm above {FACTOR:g} times the largest channel norm of the same "
                 f"layer in the WD-off run of the same seed, at the same epoch; frozen: its norm then changed by "
                 f"less than {FROZEN_RTOL:g} (relative) to the end of the run.\n\n"
                 + runaway_markdown(runaway_table(arms)))
    table_md, table_csv = out_dir / "claims.md", out_dir / "claims.csv"
    atomic_write_bytes(table_md, lambda p: Path(p).write_text(text + "\n"))
    atomic_write_bytes(table_csv, lambda p: claims.to_csv(p))
    return [figure, norms, table_md, table_csv]


# experiment file `report:` key -> function(arms {label: [run dirs]}, out_dir) -> written paths
REPORTS = {"wd": write_wd_report}
