"""The prepared GPU measurement: `python scripts/bench_gpu.py` (see benchmarks/gpu.py)."""
import os
import sys
from pathlib import Path

os.environ.setdefault("WANDB_SILENT", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ sits beside the package

from benchmarks.gpu import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
