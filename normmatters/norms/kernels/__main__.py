"""Build (or find) the C++ CPU kernels now, so that no run pays for it: ``make setup`` runs this.

    python -m normmatters.norms.kernels

Prints one line: where the cached binary is, or (no compiler, a failed build) the one warning and
that runs will use the Python fused path. Exits 0 either way, except under NM_KERNELS=native.
"""
from __future__ import annotations

import sys

from . import _mode, cache_dir, cpu_module


def main() -> int:
    if _mode() == "python":
        print("normmatters: NM_KERNELS=python, the C++ CPU kernels are not used")
        return 0
    module = cpu_module()
    if module is None:
        print("normmatters: no C++ CPU kernels; runs use the Python fused path", file=sys.stderr)
        return 0
    print(f"normmatters: C++ CPU kernels ready in {cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
