"""Training-step time of a model with each norm kind against the same model with L2 (nn.BatchNorm).

    python -m benchmarks.norm_step [--models vgg11 resnet20] [--kinds l1 linf topk mean]
                                          [--layouts nchw channels_last] [--device cpu|cuda] [--threads T]

One step is forward, cross-entropy, backward and an SGD update on a random CIFAR-shaped batch
(default 128). The L2 model and the kind's model (same seed, same layout) are timed alternately
and the reported ratio is the median of the per-pair ratios (robust to a shared machine's drift).
Target: every kind no slower than L2 (ratio ≤ 1.0) in the same layout.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from normmatters.models.registry import build_model


def _make(model_name: str, kind: str, layout: str, device: str, batch: int):
    torch.manual_seed(0)
    options = {"k": 10} if kind == "topk" else {}
    model = build_model(model_name, 10, norm=kind, norm_options=options).to(device)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def _time(step, device: str, clock: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    now = time.process_time if clock == "cpu" and device == "cpu" else time.perf_counter
    t0 = now()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    return now() - t0


def compare(model_name: str, kind: str, layout: str, device: str, batch: int, repeats: int, warmup: int,
            clock: str):
    """(median L2 step s, median kind step s, median paired ratio kind/L2)."""
    base, other = _make(model_name, "l2", layout, device, batch), _make(model_name, kind, layout, device, batch)
    for _ in range(warmup):
        base(), other()
    t_base, t_kind = [], []
    for _ in range(repeats):
        t_base.append(_time(base, device, clock))
        t_kind.append(_time(other, device, clock))
    ratios = [a / b for a, b in zip(t_kind, t_base)]
    return statistics.median(t_base), statistics.median(t_kind), statistics.median(ratios)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["vgg11", "resnet20"])
    ap.add_argument("--kinds", nargs="+", default=["l1"])
    ap.add_argument("--layouts", nargs="+", default=["nchw", "channels_last"])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} CPU threads, "
          f"batch {args.batch}, "
          f"repeats {args.repeats}, clock {args.clock}")
    print("| model | layout | kind | L2 step ms | kind step ms | kind/L2 | ≤ 1.0 |")
    print("|---|---|---|---:|---:|---:|:---:|")
    for model_name in args.models:
        for layout in args.layouts:
            for kind in args.kinds:
                t_base, t_kind, ratio = compare(model_name, kind, layout, args.device, args.batch, args.repeats,
                                                args.warmup, args.clock)
                print(f"| {model_name} | {layout} | {kind} | {t_base * 1e3:.1f} | {t_kind * 1e3:.1f} | {ratio:.2f} | "
                      f"{'met' if ratio <= 1.0 else 'NOT met'} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
