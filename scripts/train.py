"""Train one model: `python scripts/train.py model=vgg11 norm=l1 ...`; `-m` for sweeps."""
import os
import sys

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import hydra  # noqa: E402

from normmatters.cli import run_or_exit  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg) -> float:
    from normmatters.train import train

    final = run_or_exit(train, cfg)
    return final.get("test_acc", float("nan"))


if __name__ == "__main__":
    sys.exit(main())
