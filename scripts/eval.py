"""Test metrics of a run: `python scripts/eval.py RUN_DIR_OR_CHECKPOINT [--per-class] [--json] [key=value ...]`.

RUN_DIR_OR_CHECKPOINT is a run directory (finished, diverged, interrupted: its last end-of-epoch
checkpoint is evaluated; `<dir>/<run_tag>` without the hash is fine) or a checkpoint file in one.
The model, data and precision come from the run's config.yaml; key=value overrides change what
differs here (data.path=..., device=cpu, data.test_batch_size=...). Nothing is written.
"""
import argparse
import json
import os
import sys

os.environ.setdefault("WANDB_MODE", "offline")

from normmatters.cli import run_or_exit  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run directory or a checkpoint file")
    parser.add_argument("--per-class", action="store_true", help="also the accuracy of each class")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the run's config, e.g. data.path=...")
    args = parser.parse_args()
    from normmatters.train.evaluate import evaluate

    metrics = run_or_exit(evaluate, args.run, args.overrides, args.per_class)
    table = metrics.pop("per_class", None)
    if args.json:
        print(json.dumps({**metrics, **({"per_class": table.to_dict("records")} if table is not None else {})}))
        return 0
    print(f"{metrics['run_dir']} ({metrics['status']}; checkpoint of epoch {metrics['epoch']}/{metrics['epochs']}), "
          f"{metrics['data']}: test loss {metrics['test_loss']:.4f}, test accuracy {metrics['test_acc']:.2f} % "
          f"of {metrics['test_images']} images")
    if table is not None:
        print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
