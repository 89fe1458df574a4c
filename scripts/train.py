"""Train one model: `python scripts/train.py model=vgg11 norm=l1 ...`; `-m` for sweeps."""
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


if __name__ == "__main__":
    sys.exit(main())
