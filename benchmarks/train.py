"""Training throughput: the project's training step against a plain PyTorch loop, same run.

    python scripts/bench_train.py [--quick] [--models resnet20 vgg11] [--width 1.0] [--data PATH]

For each model (batch 128) three things are timed on the same images, interleaved:

* **plain**: a hand-written loop -- the same architecture with every norm layer replaced by
  ``nn.BatchNorm2d``, uint8 images in a ``Dataset`` with torchvision transforms
  (RandomCrop(32, padding=4), RandomHorizontalFlip, ToDtype, Normalize) through a standard
  ``torch.utils.data.DataLoader`` (shuffle, ``--workers`` processes), SGD (momentum 0.9,
  weight decay 5e-4), cross-entropy, eager. After ``--warmup`` batches, the rest of the epoch
  is timed (steady state: the workers' start-up is not counted, which favours the plain loop).
* **project**: the real ``normmatters.train.train(cfg)`` with the default config (``profile=paper``,
  ``norm=l2``, device loader, fp32, eager), wandb disabled, in a temporary ``out_root``;
  the number is ``images_per_s`` of its last epoch from ``epochs.parquet`` (training steps only,
  per-step logging included). The process is warmed up first by a throwaway run of the same
  model, so ``--epochs 1`` measures a warm epoch.
* **project, logging off**: the same with ``train.log_every`` larger than the run's steps.

The logging cost is reported for ``--log-every`` (default 50, the config's value). An epoch of
``--steps`` batches with ``log_every = min(--log-every, --steps)`` holds ``n`` logged steps; the
cost per logged step is scaled to one per ``--log-every`` steps (exact when ``--steps`` equals
``--log-every``). The "direct" column times the logged-step extras alone (weight snapshot,
angles, per-layer rows, logger) against the step time, which is robust to a noisy machine.

Data: a synthetic CIFAR-shaped PNG image folder in a temporary directory, or ``--data PATH``
(an image folder or .tar.gz, e.g. the CIFAR-10 JPEG copy; decoded once into the data cache).
Both paths use the same class-balanced subset of ``steps * batch`` training images.
On CUDA every timing synchronizes (the project loop syncs at the end of an epoch, the plain
loop calls ``torch.cuda.synchronize``).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from normmatters.data.synthetic import CIFAR10_CLASSES, make_image_folder

REPO = Path(__file__).resolve().parents[1]
RATIO_TARGET = 1.3      # project / plain images/s, default CPU path
LOGGING_TARGET = 5.0    # % of step time spent on per-step logging


# ------------------------------------------------------------------------------------------ data
def load_subset(path: str, cache_dir: str, n: int):
    """The uint8 training images the project's run with ``data.train_subset=n`` trains on."""
    from normmatters.data import class_balanced_subset, load_cifar

    data = load_cifar("cifar10", path, download=False, cache_dir=cache_dir, progress=False)
    if n > len(data.train_labels):
        raise ValueError(f"{n} training images needed (--steps x batch), the data has {len(data.train_labels)}")
    keep = class_balanced_subset(data.train_labels, n, 0)
    return data.train_images[keep], data.train_labels[keep]


class UInt8Images(torch.utils.data.Dataset):
    """uint8 C x H x W images + labels through a torchvision transform, one sample at a time."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), int(self.labels[i])


# ----------------------------------------------------------------------------------- plain loop
def plain_model(name: str, num_classes: int, width: float) -> nn.Module:
    """The project's architecture with every norm layer replaced by ``nn.BatchNorm2d``."""
    from normmatters.models import build_model
    from normmatters.norms import LpBatchNorm

    model = build_model(name, num_classes, norm="l2", width=width)
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, LpBatchNorm):
                setattr(parent, child_name, nn.BatchNorm2d(child.num_features))
    assert not any(isinstance(m, LpBatchNorm) for m in model.modules())
    return model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_plain(name: str, width: float, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int,
               warmup: int, workers: int, device: torch.device, seed: int = 0) -> float:
    """Images/s of a plain eager loop over one epoch of ``images``, the first ``warmup`` batches untimed."""
    from torchvision.transforms import v2

    from normmatters.data import CIFAR10_MEAN, CIFAR10_STD

    torch.manual_seed(seed)
    model = plain_model(name, 10, width).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    transform = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    loader = torch.utils.data.DataLoader(UInt8Images(images, labels, transform), batch_size=batch_size,
                                         shuffle=True, num_workers=workers, drop_last=True,
                                         pin_memory=device.type == "cuda")
    if len(loader) <= warmup:
        raise ValueError(f"--steps must exceed --warmup ({warmup}) batches")
    model.train()
    seen, start = 0, None
    for i, (x, y) in enumerate(loader):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if start is not None:
            seen += len(y)
    _sync(device)
    return seen / (time.perf_counter() - start)


# --------------------------------------------------------------------------------- project path
def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=list(overrides))


def project_overrides(model: str, width: float, data_path: str, cache_dir: str, out_root: str, *,
                      subset: int, batch_size: int, epochs: int, log_every: int, tag: str,
                      device: str, extra: list[str]) -> list[str]:
    return [f"model={model}", f"model.width={width}", f"data.path={data_path}", f"data.cache_dir={cache_dir}",
            "data.download=false", f"data.train_subset={subset}", f"data.batch_size={batch_size}",
            f"train.epochs={epochs}", f"train.log_every={log_every}", "train.progress=false",
            "wandb.mode=disabled", f"out_root={out_root}", "name=bench", f"run_tag={tag}",
            f"device={device}", *extra]


def time_project(overrides: list[str]) -> float:
    """``images_per_s`` of the last epoch of a real ``train(cfg)`` run."""
    from normmatters import runs
    from normmatters.train import train

    result = train(compose(overrides))  # (its run directory is named by the config's hash)
    return float(runs.read_table(result["run_dir"], "epochs")["images_per_s"].iloc[-1])


def time_logging_extras(overrides: list[str], repeats: int = 5) -> float:
    """Median seconds of what a logged step adds to a step in ``train``'s loop (see loop.py):
    the weight snapshot, the lr lookup, the angles, the window sync, the per-layer rows, the logger."""
    from normmatters.dynamics import AngleProbe, layer_rows, scale_invariant_weights
    from normmatters.optim import build_optimizer
    from normmatters.train.build import model_from_config, pick_device
    from normmatters.train.logger import RunLogger
    from normmatters.train.validate import validate
    from omegaconf import OmegaConf

    cfg = compose(overrides)
    checked = validate(cfg)
    device = pick_device(cfg.device)
    model = model_from_config(checked.model, checked.norm, checked.weight_norm, 10).to(device)
    optimizer = build_optimizer(model, checked.optim)
    weights = scale_invariant_weights(model)
    from normmatters import runs

    run_dir = runs.run_dir_for(OmegaConf.to_container(cfg, resolve=True))
    logger = RunLogger(run_dir, cfg.wandb, cfg.run_tag, cfg.name, OmegaConf.to_container(cfg))
    probe = AngleProbe(weights)
    window = torch.ones(3, device=device)
    times = []
    for step in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        probe.before()
        by_id = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
        lrs = {n: by_id[id(w)] for n, w in weights.items()}
        angles = probe.after()
        w_loss, w_correct, w_seen = window.tolist()
        row = {"step": step, "epoch": 1, "lr": 0.1, "loss": w_loss / w_seen, "acc": 100 * w_correct / w_seen}
        logger.log_step(step, row, layer_rows(weights, lrs, 1, step, angles))
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


# ------------------------------------------------------------------------------------- benchmark
@dataclass
class Result:
    model: str
    plain: list[float] = field(default_factory=list)
    project: list[float] = field(default_factory=list)
    project_nolog: list[float] = field(default_factory=list)
    extras_s: float = math.nan

    def ratio(self) -> float:  # median of the per-repeat ratios: robust to slow drifts
        return statistics.median(p / q for p, q in zip(self.project, self.plain))

    def logging_cost(self, steps: int, log_every: int, measured_every: int) -> float:
        """% of step time spent logging at one logged step per ``log_every`` steps."""
        logged = steps // measured_every
        per_rep = [(off / on - 1) * steps / (logged * log_every)
                   for on, off in zip(self.project, self.project_nolog)]
        return 100 * statistics.median(per_rep)

    def direct_cost(self, batch_size: int, log_every: int) -> float:
        step_s = batch_size / statistics.median(self.project_nolog)
        return 100 * self.extras_s / (log_every * step_s)


def _fmt(x: float, digits: int = 0) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def table(results: list[Result], args, measured_every: int) -> str:
    lines = [f"| model | plain img/s | project img/s (log_every={measured_every}) | ratio project/plain "
             f"| project, logging off, img/s | logging cost @ log_every={args.log_every} "
             f"| logging cost, direct | ratio ≥ {RATIO_TARGET} | logging < {LOGGING_TARGET:g}% |",
             "|---|---:|---:|---:|---:|---:|---:|:---:|:---:|"]
    for r in results:
        ratio = r.ratio()
        cost = r.logging_cost(args.steps, args.log_every, measured_every)
        direct = r.direct_cost(args.batch_size, args.log_every)
        lines.append(
            f"| {r.model} | {_fmt(statistics.median(r.plain))} | {_fmt(statistics.median(r.project))} "
            f"| {_fmt(ratio, 2)}× | {_fmt(statistics.median(r.project_nolog))} | {_fmt(cost, 1)}% "
            f"| {_fmt(direct, 2)}% | {'met' if ratio >= RATIO_TARGET else 'NOT met'} "
            f"| {'met' if cost < LOGGING_TARGET else 'NOT met'} |")
    return "\n".join(lines)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}"


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet20", "vgg11"])
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=None, help="batches per measured epoch (default 50; --quick 20)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed warm-up batches (default 3; --quick 2)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs of each project run; the last one is reported")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repetitions; medians are reported")
    ap.add_argument("--log-every", type=int, default=50, help="logging interval the cost is reported for")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain loop")
    ap.add_argument("--data", default=None, help="image folder or .tar.gz (default: synthetic PNG folder)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="extra Hydra override for the project runs, e.g. train.channels_last=true")
    ap.add_argument("--quick", action="store_true", help="20 steps, 2 warm-up batches")
    args = ap.parse_args(argv)
    args.steps = args.steps or (20 if args.quick else 50)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 3)
    if args.steps <= args.warmup:
        ap.error("--steps must exceed --warmup")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("WANDB_SILENT", "true")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    n_train = args.steps * args.batch_size
    measured_every = min(args.log_every, args.steps)
    nolog_every = args.steps * args.epochs + 1
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        tmp = Path(tmp)
        if args.data is None:
            data_path = str(make_image_folder(tmp / "data", math.ceil(n_train / len(CIFAR10_CLASSES)), 10))
            cache_dir = str(tmp / "cache")
        else:
            data_path = str(Path(os.path.expanduser(args.data)).resolve())
            cache_dir = "~/.cache/normmatters/cache"
        images, labels = load_subset(data_path, cache_dir, n_train)
        results = []
        for name in args.models:
            res = Result(name)

            def ov(tag, subset, epochs, log_every, name=name):
                return project_overrides(name, args.width, data_path, cache_dir, str(tmp / "runs"),
                                         subset=subset, batch_size=args.batch_size, epochs=epochs,
                                         log_every=log_every, tag=f"{name}_{tag}", device=device.type,
                                         extra=args.override)

            print(f"[{name}] warm-up run", file=sys.stderr)
            time_project(ov("warmup", args.warmup * args.batch_size, 1, 1))
            for rep in range(args.repeats):
                print(f"[{name}] repeat {rep + 1}/{args.repeats}: plain loop", file=sys.stderr)
                res.plain.append(time_plain(name, args.width, images, labels, batch_size=args.batch_size,
                                            warmup=args.warmup, workers=args.workers, device=device))
                order = [("log", measured_every), ("nolog", nolog_every)]
                for what, every in (order if rep % 2 == 0 else order[::-1]):
                    print(f"[{name}] repeat {rep + 1}/{args.repeats}: project, log_every={every}", file=sys.stderr)
                    ips = time_project(ov(f"{what}_r{rep}", n_train, args.epochs, every))
                    (res.project if what == "log" else res.project_nolog).append(ips)
            res.extras_s = time_logging_extras(ov("extras", n_train, 1, measured_every))
            results.append(res)

    print(f"\n{describe_device(device)}; torch {torch.__version__}; batch {args.batch_size}; width {args.width:g}; "
          f"{args.steps} steps per measured epoch ({args.warmup} warm-up batches untimed in the plain loop); "
          f"plain loop: DataLoader with {args.workers} workers; repeats {args.repeats}; "
          f"data: {'synthetic PNG folder' if args.data is None else args.data}; "
          f"load average before/after: {load_before} / {_load()}")
    if args.override:
        print(f"project overrides: {' '.join(args.override)}")
    if measured_every != args.log_every:
        print(f"(logging measured at log_every={measured_every} and scaled to log_every={args.log_every})")
    print()
    print(table(results, args, measured_every))
    if args.repeats > 1:
        print()
        for r in results:
            print(f"{r.model} per repeat, img/s: plain {_ints(r.plain)}; project {_ints(r.project)}; "
                  f"project, logging off {_ints(r.project_nolog)}")
    return 0


def _ints(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
