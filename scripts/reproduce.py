"""Run an experiment of configs/experiment/ and write its report.

    python scripts/reproduce.py --list
    python scripts/reproduce.py --experiment wd_vgg11[,norms_cifar] --profile cpu --seeds 0-3 [--arms a,b] [--dry-run]
                                [--out-root outputs] [hydra overrides ...]
    python scripts/reproduce.py --experiment norms_cifar --profile cpu --plan-seeds --out-root results [--dry-run]
    python scripts/reproduce.py --experiment norms_cifar --profile cpu --planned [--seeds 3,5,7] --out-root results

First checks the data once (offline without DATA / data.path: one line, exit 2) and prints the
grand total of every experiment named (runs, time). Runs every arm and seed in dependency order (an
arm after the arms it needs, same seed), skips finished runs, resumes interrupted ones, goes on after
a failed run or report, prints "run i/N" with a time estimate, then writes the report beside the
runs and REPORT.md (every claim of the paper, docs/paper.md) in the out-root. --dry-run prints the
plan and its cost only.

--plan-seeds computes from the committed runs how many seeds each claim needs (its spread only,
normmatters/experiments/seed_plan.py), prints the plan and its cost, and writes each arm's count
into the experiment file (not with --dry-run); commit it before the runs. A different plan already
in the file is kept (one line, exit 2) unless --replace-plan. --planned then runs each
arm only at the seeds below its planned count (all of them unless --seeds names some).
"""
import argparse
import os
import sys
import traceback
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from normmatters.cli import USER_ERRORS, run_or_exit  # noqa: E402
from normmatters.data.available import ensure_data  # noqa: E402
from normmatters.experiments import definition, runner, seed_plan  # noqa: E402
from normmatters.experiments.compose import compose_train  # noqa: E402
from normmatters.experiments.paper_report import write_paper_report  # noqa: E402
from normmatters.experiments.report import REPORTS  # noqa: E402
from normmatters.experiments.totals import grand_total  # noqa: E402
from normmatters.train.validate import validate  # noqa: E402

PROFILES = ("auto", "cpu", "paper", "smoke")


def seeds(text: str) -> list[int]:
    """"0,2,5" or "0-3" or a mix: "0-3,7"."""
    out = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            if hi and int(hi) < int(lo):
                raise ValueError(part)
            out.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r} is not valid; use e.g. 0,1,2 or 0-7 "
                                         "(a range low-high with low <= high)") from None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="wd_vgg11",
                        help="a name from --list, several joined by commas, 'all', or a .yaml path")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--profile", default="auto", choices=PROFILES,
                        help="paper (GPU scale), cpu (2-core scale), smoke; auto = paper with CUDA, else cpu")
    parser.add_argument("--seeds", type=seeds, default=None,
                        help="e.g. 0,1,2 or 0-7 (default 0,1,2; with --planned, every planned seed)")
    parser.add_argument("--plan-seeds", action="store_true",
                        help="plan each arm's number of seeds from the committed runs' spread and write it "
                             "into the experiment file")
    parser.add_argument("--replace-plan", action="store_true",
                        help="with --plan-seeds: write over a different seed plan already in the experiment file")
    parser.add_argument("--planned", action="store_true",
                        help="run each arm only at the seeds below its count in the experiment file's seed plan")
    parser.add_argument("--arms", default=None, help="comma-separated arms (default: the experiment's arms)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its estimated cost, run nothing")
    parser.add_argument("--wait", action="store_true",
                        help="a run directory another process works on: wait for it (default: report it, go on)")
    parser.add_argument("--out-root", default="outputs",
                        help="where run directories go (default: outputs; the committed runs are in results/)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. data.path=...")
    args = parser.parse_args()
    if args.replace_plan and not args.plan_seeds:
        parser.error("--replace-plan goes with --plan-seeds")
    if args.list:
        for name in definition.experiment_names():
            exp = definition.load_experiment(name)
            print(f"{name:<16} {exp.description}  [arms: {', '.join(exp.default_arms)}; "
                  f"variants: {', '.join(n for n, a in exp.arms.items() if a.variant) or 'none'}]")
        return 0
    profile, why = pick_profile(args.profile)
    names = definition.experiment_names() if args.experiment == "all" else args.experiment.split(",")
    exps = [run_or_exit(load, name) for name in names]
    overrides = [f"out_root={args.out_root}", *(["wait_for_lock=true"] if args.wait else []), *args.overrides]
    if args.plan_seeds:
        for exp in exps:
            run_or_exit(plan_seeds, exp, profile, overrides, args.dry_run, args.replace_plan)
        return 0
    data = run_or_exit(check_data, exps, profile, overrides, args.dry_run)  # before planning: offline stops here
    planned = [(exp, run_or_exit(plan, exp, profile, args, overrides)) for exp in exps]
    print(grand_total(planned, profile) + why, flush=True)  # the first line: what the whole job costs
    print("\n".join(data), flush=True)
    failures = []
    for exp, jobs in planned:
        failures += run_or_exit(one, exp, jobs, profile, args)
    if not args.dry_run and Path(args.out_root).is_dir():
        failures += reported("REPORT.md", lambda: [write_paper_report(Path(args.out_root))])
    if failures:
        print(f"{len(failures)} failure{'s' if len(failures) > 1 else ''}: " + "; ".join(failures), file=sys.stderr)
    return 1 if failures else 0


def pick_profile(profile: str) -> tuple[str, str]:
    """The profile, and why when chosen automatically (auto = paper with CUDA, else cpu)."""
    if profile != "auto":
        return profile, ""
    import torch

    profile = "paper" if torch.cuda.is_available() else "cpu"
    return profile, f"; {'CUDA found' if profile == 'paper' else 'no CUDA'}, --profile to choose"


def load(name: str):
    exp = definition.load_experiment(name)
    if exp.report and exp.report not in REPORTS:
        raise ValueError(f"experiment {name}: report={exp.report!r} is not valid; choose one of: {', '.join(REPORTS)}")
    return exp


def plan(exp, profile: str, args, overrides: list[str]) -> list:
    """The experiment's jobs: the seeds asked for, or with --planned its seed plan's."""
    counts = None
    if args.planned:
        counts = exp.seed_plan.get(profile)
        if not counts:
            raise ValueError(f"experiment {exp.name} has no seed plan for profile {profile}; "
                             f"make one with --plan-seeds (valid with --planned: {', '.join(exp.seed_plan) or 'none'})")
    chosen = args.seeds if args.seeds is not None else list(range(max(counts.values()))) if counts else [0, 1, 2]
    arms = args.arms.split(",") if args.arms else None
    return runner.plan(exp, compose_train, profile, chosen, arms, overrides, counts)


def check_data(exps, profile: str, overrides: list[str], dry_run: bool) -> list[str]:
    """Each distinct data section of the experiments is there (a dry run downloads nothing)."""
    sections = {}
    for exp in exps:
        data = runner.plan(exp, compose_train, profile, [0], exp.default_arms[:1], overrides)[0].cfg.data
        sections.setdefault(repr(sorted(data.items())), data)
    return [ensure_data(data, fetch=not dry_run) for data in sections.values()]


def reported(what: str, write) -> list[str]:
    """write() -> paths; a failure is printed and returned (one entry), like a failed run: the job goes on."""
    try:
        paths = write()
    except Exception as err:  # noqa: BLE001 - collected; the other experiments still run
        if not isinstance(err, USER_ERRORS):
            traceback.print_exc()
        error = " ".join(f"{type(err).__name__}: {err}".split())
        print(f"report {what} failed: {error}", file=sys.stderr)
        return [f"report {what}: {error}"]
    print("\n".join(f"wrote {p}" for p in paths), flush=True)
    return []


def one(exp, jobs: list, profile: str, args) -> list[str]:
    """Run one experiment's plan and write its report; returns its failures (runs, report)."""
    if not jobs:
        print(f"experiment {exp.name}: nothing planned at these seeds")
        return []
    if args.dry_run:  # the plan says what a real run would refuse (which records it as failed and goes on)
        for job in jobs:
            validate(job.cfg)
    print(runner.describe_plan(exp, jobs, profile), flush=True)
    if args.dry_run:
        return []
    table = runner.run(exp, jobs, profile)
    exp_dir = jobs[0].run_dir.parent
    failures = []
    if exp.report:
        failures += reported(f"of {exp.name}", lambda: write_report(exp, exp_dir))
    bad = table[~table["status"].isin(["finished", "diverged"])]
    if len(bad):
        print(f"{len(bad)} of {len(table)} runs did not finish: "
              + "; ".join(f"{r.arm} seed {r.seed}: {r.status} {r.error}".strip() for r in bad.itertuples()),
              file=sys.stderr)
        failures.append(f"{exp.name}: {len(bad)} of {len(table)} runs did not finish")
    return failures


def write_report(exp, exp_dir: Path) -> list:
    found = definition.discover(exp, exp_dir)
    return REPORTS[exp.report](exp, found, exp_dir) if found else []


def plan_seeds(exp, profile: str, overrides: list[str], dry_run: bool, replace: bool = False) -> int:
    """Print the seed plan of ``exp`` from the runs where its runs live, and write it into its file."""
    import datetime
    import subprocess

    exp_dir = runner.plan(exp, compose_train, profile, [0], exp.default_arms[:1], overrides)[0].run_dir.parent
    plan = seed_plan.plan_experiment(exp, exp_dir, profile)
    print(seed_plan.plan_text(plan), flush=True)
    if not dry_run:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown commit"
        note = f"from the runs in {exp_dir.name}/ at {commit}, {datetime.date.today()}"
        if seed_plan.write_plan(exp.path, profile, plan.arms, note, replace):
            print(f"wrote the seed plan into {exp.path}")
        else:
            print(f"{exp.path} already holds this seed plan; unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
