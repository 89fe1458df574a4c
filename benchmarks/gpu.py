"""The prepared GPU measurement, run once whenever a GPU is lent (at most ~8 minutes):

    python scripts/bench_gpu.py [--budget-s 480] [--out results/bench]     # make bench-gpu
    python scripts/bench_gpu.py --smoke                                     # tiny, on the CPU (tests)

1. Training images/s of VGG11, ResNet-18 and ResNet-20 (CIFAR-10 shapes, batch 128): the project's loop with
   the paper profile's fast path (device-resident loader, channels_last, fp32; then bf16 autocast)
   against a plain PyTorch loop (nn.BatchNorm2d, torchvision transforms, a DataLoader) on the same
   device in the same run (``benchmarks.train``).
2. L1 / L∞ / top-k batch norm forward+backward against nn.BatchNorm2d (``benchmarks.norms``).
3. The projected wall time of every paper-profile CIFAR experiment, one seed, all arms: per run
   epochs × (train images + test images / 3) / (the measured fp32 images/s of its model). It
   ignores the norm kind's cost (part 2) and emulated precision, which is slower: an estimate.

The report (Markdown) is printed and written to ``<out>/gpu-<card>-<date>.md`` (never over an
existing file). Parts that would pass the budget are skipped and say so.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import train as bench_train
from normmatters.train.denormals import flushing_denormals

MODELS = ("vgg11", "resnet18_cifar", "resnet20")  # resnet20: the Lp-BN experiments' model
EXPERIMENTS = ("wd_vgg11", "norms_cifar", "half_precision_probe", "float_formats")
NORM_KINDS = ("l1", "linf", "topk")
TEST_COST = 1 / 3  # an evaluation image costs about a third of a training image (forward only)


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def training_rows(args, device, data_path, cache_dir, out_root, budget) -> tuple[list[str], dict]:
    """Part 1: a Markdown row per (model, precision); returns the rows and fp32 img/s per model."""
    n = args.steps * args.batch
    images, labels = bench_train.load_subset(data_path, cache_dir, n)
    rows, ips = [], {}
    for model in args.models:
        if budget.left() < 60 and not args.smoke:
            rows.append(f"| {model} | skipped: time budget | | | |")
            continue
        plain = bench_train.time_plain(model, args.width, images, labels, batch_size=args.batch,
                                       warmup=args.warmup, workers=args.workers, device=device)
        for precision in ("fp32", "bf16"):
            ov = bench_train.project_overrides(model, args.width, data_path, cache_dir, out_root, subset=n,
                                               batch_size=args.batch, epochs=2, log_every=50,
                                               tag=f"{model}_{precision}", device=device.type,
                                               extra=["profile=paper", f"model.width={args.width}",
                                                      f"precision={precision}", *args.override])
            ours = bench_train.time_project(ov)  # epoch 2: warm
            if precision == "fp32":
                ips[model] = ours
            rows.append(f"| {model} | {precision} | {plain:.0f} | {ours:.0f} | {ours / plain:.2f}× |")
            print(f"[train] {model} {precision}: plain {plain:.0f}, project {ours:.0f} img/s", file=sys.stderr)
    return rows, ips


def norm_rows(args, device, budget) -> list[str]:
    """Part 2: fused Lp BN forward+backward time / nn.BatchNorm2d's, per shape and layout."""
    from benchmarks import norms as bench_norms

    rows = []
    shapes = [(8, 4, 8, 8)] if args.smoke else bench_norms.SHAPES
    for shape in shapes:
        for layout in bench_norms.LAYOUTS:
            cells = []
            for kind in NORM_KINDS:
                if budget.left() < 20 and not args.smoke:
                    cells.append("skipped")
                    continue
                _, t_bn, ratio, mem = bench_norms.measure(kind, True, shape, layout, device.type,
                                                          repeats=3 if args.smoke else 20, warmup=2)
                cells.append(f"{ratio:.2f}× (BN {t_bn * 1e3:.3f} ms, saved {mem:.2f}×)")
            rows.append(f"| {tuple(shape)} | {layout} | " + " | ".join(cells) + " |")
    return rows


def projection_rows(ips: dict, width: float) -> tuple[list[str], float]:
    """Part 3: hours of each paper-profile CIFAR experiment (one seed) at the measured speeds."""
    from normmatters.experiments import definition, runner
    from normmatters.experiments.compose import compose_train

    rows, total = [], 0.0
    for name in EXPERIMENTS:
        exp = definition.load_experiment(name)
        jobs = runner.plan(exp, compose_train, "paper", [0], list(exp.arms), ["out_root=/nonexistent"])
        seconds, unknown = 0.0, set()
        for job in jobs:
            cfg = job.cfg
            speed = ips.get(cfg.model.name)
            if speed is None:
                unknown.add(cfg.model.name)
                continue
            scale = (width / cfg.model.width) ** 2  # a conv net's cost grows about as width²
            n_train = cfg.data.train_subset or 50_000
            seconds += cfg.train.epochs * (n_train + TEST_COST * 10_000) / (speed * scale)
        total += seconds
        note = f" (not measured: {', '.join(sorted(unknown))})" if unknown else ""
        rows.append(f"| {name} | {len(jobs)} | {seconds / 3600:.2f} h{note} |")
    return rows, total


def _card(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def report_path(out: Path, card: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    base = out / f"gpu-{slug}-{dt.date.today().isoformat()}"
    path, i = base.with_suffix(".md"), 1
    while path.exists():
        i += 1
        path = Path(f"{base}-{i}.md")
    return path


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget-s", type=float, default=480, help="stop starting new parts after this (default 480)")
    ap.add_argument("--out", default="results/bench", help="directory of the report")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (what the tests run)")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="extra Hydra override for the project runs, e.g. train.compile=true")
    args = ap.parse_args(argv)
    if args.budget_s <= 0:
        ap.error(f"--budget-s={args.budget_s} is invalid; valid: a positive number of seconds")
    args.models = MODELS
    args.width = 0.125 if args.smoke else 1.0
    args.batch, args.steps, args.warmup = (8, 4, 1) if args.smoke else (128, 60, 10)
    args.workers = 0 if args.smoke else 4
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # tiny paper-lr runs reach subnormal floats, ~100x slower on x86 CPUs; the process gets its setting back
    with flushing_denormals(args.smoke):
        return _bench(args)


def _bench(args) -> int:
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.smoke:
        print("error: no CUDA device is visible; run on a GPU machine, or --smoke for the CPU check", file=sys.stderr)
        return 2
    budget, started = Budget(args.budget_s), time.monotonic()
    card = _card(device)
    print(f"bench_gpu on {card}, torch {torch.__version__}, budget {args.budget_s:.0f} s"
          + (" (smoke: tiny sizes on the CPU)" if args.smoke else ""), file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        tmp = Path(tmp)
        n = args.steps * args.batch
        data = bench_train.make_image_folder(tmp / "data", math.ceil(n / 10), 2 if args.smoke else 10)
        with contextlib.redirect_stdout(sys.stderr):  # the training runs' own lines go to stderr
            train, ips = training_rows(args, device, str(data), str(tmp / "cache"), str(tmp / "runs"), budget)
    norms = norm_rows(args, device, budget)
    proj, total = projection_rows(ips, args.width)
    text = "\n".join([
        f"# GPU benchmark: {card}", "",
        f"{dt.datetime.now().isoformat(timespec='minutes')}; torch {torch.__version__}; "
        f"`python scripts/bench_gpu.py{' --smoke' if args.smoke else ''}`; {time.monotonic() - started:.0f} s", "",
        f"## Training images/s (batch {args.batch}, width {args.width:g}, synthetic CIFAR-shaped data, "
        f"{args.steps} steps per epoch; project: paper profile, second epoch)", "",
        "| model | precision | plain PyTorch | project | project / plain |", "|---|---|---:|---:|---:|", *train, "",
        "## Lp batch norm forward+backward against nn.BatchNorm2d (fused path; ratio of medians of pairs)", "",
        "| shape | layout | " + " | ".join(NORM_KINDS) + " |", "|---|---|" + "---|" * len(NORM_KINDS), *norms, "",
        "## Projected wall time of the paper-profile CIFAR experiments (one seed, all arms; fp32 speeds, "
        "norm-kind and emulation costs not included)", "",
        "| experiment | runs | time |", "|---|---:|---:|", *proj, "",
        f"Total: {total / 3600:.2f} h (target: under 1 h on one H100).", ""])
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = report_path(out, card)
    path.write_text(text)
    print(f"written: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
