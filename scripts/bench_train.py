"""Training throughput, project vs a plain PyTorch loop: `python scripts/bench_train.py [--quick]`.

See benchmarks/train.py (also `python -m benchmarks.train`).
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("WANDB_SILENT", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ sits beside the package

from benchmarks.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
