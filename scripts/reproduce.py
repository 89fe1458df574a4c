"""Reproduce PAPER.md §2 (weight decay vs LR correction vs norm schedule) and write its report.

    python scripts/reproduce.py --profile cpu --seeds 0,1,2 [--out-root outputs] [hydra overrides ...]

Runs every arm and seed in order (WD on first: it is the others' reference), skips finished runs,
resumes interrupted ones, then writes figure.png and claims.md beside the runs.
"""
import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from hydra import compose, initialize_config_dir  # noqa: E402

from normmatters.cli import run_or_exit  # noqa: E402
from normmatters.experiments import wd_lr  # noqa: E402
from normmatters.experiments.report import write_wd_report  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PROFILES = ("auto", "cpu", "paper", "smoke")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="auto", choices=PROFILES,
                        help="paper (GPU scale), cpu (2-core scale), smoke; auto = paper with CUDA, else cpu")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2],
                        help="comma-separated seeds (default: 0,1,2, as in results/)")
    parser.add_argument("--out-root", default="outputs",
                        help="where run directories go (default: outputs; the committed runs are in results/)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every arm, e.g. data.path=...")
    args = parser.parse_args()
    profile = args.profile
    if profile == "auto":
        import torch

        profile = "paper" if torch.cuda.is_available() else "cpu"
        print(f"profile: {profile} ({'CUDA found' if profile == 'paper' else 'no CUDA'}; use --profile to choose)")
    overrides = [f"out_root={args.out_root}", *args.overrides]

    def compose_train(extra):
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            return compose(config_name="train", overrides=list(extra))

    arms = run_or_exit(wd_lr.run, compose_train, profile, args.seeds, overrides)
    out = wd_lr.experiment_dir(compose_train, profile, overrides)
    written = write_wd_report(arms, out)
    print("\n".join(f"wrote {p}" for p in written))


if __name__ == "__main__":
    sys.exit(main())
