"""PAPER.md §1 as a logged measurement: scaled twins of VGG11 (float64, ε = 1e-30) against the
reference run, for several c and momenta, plus the control without the LR/WD change.

    python scripts/check_scale_invariance.py [--out results/scale_invariance]

Writes result.json (the deviations, the criterion, the commit) there; refuses to overwrite another
commit's result unless --force. Criterion (fixed in the README before the first run): HOLDS when
every twin's logits stay within 1e-6 and its weights within 1e-9 (relative) of the reference's, and
every control drifts by more than 1e-3.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from normmatters import runs
from normmatters.dynamics.scale_equivalence import measure
from normmatters.models import build_model
from normmatters.verdicts import FAILS, HOLDS

LOGITS_TOL, WEIGHTS_TOL, CONTROL_MIN = 1e-6, 1e-9, 1e-3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/scale_invariance"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--force", action="store_true", help="replace a result made at another commit")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
    commit += "+dirty" if dirty.strip() else ""
    old = args.out / "result.json"
    if old.exists() and json.loads(old.read_text()).get("git_commit") != commit and not args.force:
        print(f"error: {old} holds a result of another commit; pass --force to replace it", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    model = build_model("vgg11", 10, norm="l2", norm_options={"eps": 1e-30}, width=1 / 16).double().train()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, 32, 32, generator=g, dtype=torch.float64), torch.randint(0, 10, (8,), generator=g))
               for _ in range(args.steps)]
    rows = []
    for control in (False, True):
        for c in (0.5, 2.0, 10.0):
            for momentum in (0.0, 0.9):
                rows.append(measure(model, c, momentum, batches, control=control))
                print(rows[-1], flush=True)
    twins, controls = [r for r in rows if not r["control"]], [r for r in rows if r["control"]]
    holds = (all(r["logits_rel"] <= LOGITS_TOL and r["weights_rel"] <= WEIGHTS_TOL for r in twins)
             and all(r["logits_rel"] > CONTROL_MIN for r in controls))
    result = {"claim": "PAPER.md §1: scaled invariant weights with LR c²η and WD λ/c² compute the same function",
              "setup": f"VGG11 × 1/16 width, L2 BN (ε = 1e-30), float64, {args.steps} SGD steps of 8 random 32×32 "
                       "images, LR 0.1, WD 5e-3 on every parameter",
              "criterion": f"twins: logits within {LOGITS_TOL:g}, weights within {WEIGHTS_TOL:g} (relative); "
                           f"controls: logits off by more than {CONTROL_MIN:g}",
              "verdict": HOLDS if holds else FAILS, "rows": rows, "git_commit": commit,
              "torch": torch.__version__}
    text = json.dumps(result, indent=2)
    runs.atomic_write_bytes(old, lambda p: Path(p).write_text(text + "\n"))
    print(f"{result['verdict']}: wrote {old}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
