"""Rebuild every figure and claims table under results/ from the logged run tables.

    python scripts/plot.py [RESULTS_DIR]

Needs neither the data nor a GPU: a figure is a function of the tables in the run directories.
"""
import argparse
import sys
from pathlib import Path

from normmatters.experiments import wd_lr
from normmatters.experiments.report import write_wd_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", default="results", type=Path)
    args = parser.parse_args()
    if not args.results.is_dir():
        print(f"error: results directory {str(args.results)!r} does not exist", file=sys.stderr)
        return 2
    found = 0
    for exp_dir in sorted(p for p in args.results.iterdir() if p.is_dir()):
        arms = wd_lr.discover(exp_dir)
        if "WD on" not in arms:
            continue
        for path in write_wd_report(arms, exp_dir):
            print(f"wrote {path}")
        found += 1
    if not found:
        print(f"error: no weight-decay experiment (a wd_on_s<seed> run) under {args.results}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
