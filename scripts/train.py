"""Train one model: `python scripts/train.py model=vgg11 norm=l1 ...`; `-m` for sweeps; one arm of an
experiment: `python scripts/train.py arm=wd_on name=wd_vgg11_cpu profile=cpu seed=0` (the command
`scripts/reproduce.py --dry-run` prints)."""
import os
import sys

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import hydra  # noqa: E402

from normmatters.cli import run_job  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg) -> dict:
    from normmatters.train import train

    return run_job(train, cfg)


def renamed(argv) -> str | None:
    """The one-line error for an arm chosen the old way, ``experiment=<arm>`` (configs/arm/ was
    configs/experiment/, and the arm's file set the directory name)."""
    old = next((a for a in argv if a.split("=", 1)[0].lstrip("+") == "experiment"), None)
    if old is None:
        return None
    return (f"error: {old} is not valid: an arm is chosen with arm={old.split('=', 1)[1]} (configs/arm/) and its "
            "experiment's directory with name=... (`scripts/reproduce.py --dry-run` prints a run's whole command)")


if __name__ == "__main__":
    if renamed(sys.argv[1:]):
        print(renamed(sys.argv[1:]), file=sys.stderr)
        sys.exit(2)
    sys.exit(main())
