"""The prepared GPU measurement: `python scripts/bench_gpu.py` (see normmatters/bench/gpu.py)."""
import os
import sys

os.environ.setdefault("WANDB_SILENT", "true")

from normmatters.bench.gpu import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
