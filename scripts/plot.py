"""Rebuild every experiment report under results/ from the logged run tables, then results/REPORT.md
(every claim of PAPER.md with its verdict).

    python scripts/plot.py [RESULTS_DIR] [--readme README.md] [--docs docs/results.md]

--readme also rewrites that README's "Results at a glance" table (between its two marker lines)
from the same runs, so the front door never drifts from REPORT.md; --docs rewrites the results
page's per-seed "Final" tables (each between its final-table marker lines) the same way.

Needs neither the data nor a GPU: a report is a function of the tables in the run directories.
A table that cannot be read, or no longer matches its run's manifest, stops it with one line
naming the file (``make figures`` first verifies every run: scripts/verify_runs.py).
An experiment directory is reported by every experiment of configs/experiment/ whose file names
it (``name:``) and whose arms have runs in it.
"""
import argparse
import sys
from pathlib import Path

from normmatters.experiments.definition import discover
from normmatters.experiments.homes import experiment_homes
from normmatters.experiments.paper_report import claim_rows, write_paper_report
from normmatters.experiments.readme_glance import write_glance
from normmatters.experiments.results_page import write_final_tables
from normmatters.experiments.report import REPORTS


def main() -> int:
    try:
        return report()
    except (ValueError, OSError) as err:  # a damaged or changed run file: named, one line
        print(f"error: {err}", file=sys.stderr)
        return 2


def report() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", default="results", type=Path)
    parser.add_argument("--readme", type=Path, help="README whose glance table to rewrite from these runs")
    parser.add_argument("--docs", type=Path, help="results page whose final tables to rewrite from these runs")
    args = parser.parse_args()
    if not args.results.is_dir():
        print(f"error: results directory {str(args.results)!r} does not exist", file=sys.stderr)
        return 2
    found = 0
    for exp, exp_dir in experiment_homes(args.results):
        if not exp.report:
            continue
        for path in REPORTS[exp.report](exp, discover(exp, exp_dir), exp_dir):
            print(f"wrote {path}")
        found += 1
    if not found:
        print(f"error: no experiment runs (e.g. a wd_on_s<seed> run) under {args.results}", file=sys.stderr)
        return 2
    rows = claim_rows(args.results)  # one read of the claims tables for REPORT.md, the README and the docs
    print(f"wrote {write_paper_report(args.results, rows)}")
    if args.readme:
        print(f"wrote {write_glance(args.readme, args.results, rows)}")
    if args.docs:
        print(f"wrote {write_final_tables(args.docs, args.results, rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
