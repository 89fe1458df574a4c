"""Training throughput, project vs a plain PyTorch loop: `python scripts/bench_train.py [--quick]`.

See normmatters/bench/train.py (also `python -m normmatters.bench.train`).
"""
import os
import sys

os.environ.setdefault("WANDB_SILENT", "true")

from normmatters.bench.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
