"""Forward+backward time and saved-tensor memory of each norm kind against nn.BatchNorm2d.

    python -m benchmarks.norms [--quick] [--device cpu|cuda|all] [--kinds l1 linf ...]

For every shape and layout (NCHW, channels_last) each kind runs in eager mode (the plain composite
differentiated by autograd) and fused mode (the kernels: C++ on CPU, Triton on CUDA, see
``normmatters/norms/kernels``; the header line says which ran), timed against native
nn.BatchNorm2d on the same input in the same process. Timings are interleaved (native, kind,
native, kind, ...) and the reported ratio is the median of the per-pair ratios, which is robust
to the slow drifts of a shared machine. Each timed step is y = norm(x); autograd.grad(y, (x,
weight, bias), dy). "saved" is the bytes autograd keeps for backward (distinct storages seen by
saved_tensors_hooks), relative to native BN.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn

from normmatters.norms import build_norm

SHAPES = ((128, 16, 32, 32), (128, 64, 16, 16), (256, 256, 8, 8))
LAYOUTS = ("nchw", "channels_last")
KINDS = ("l1", "linf", "topk", "mean")
# Targets of the fused path (kind time / native BN time), per device.
TARGETS = {"cpu": {"l1": 0.8, "mean": 0.8, "linf": 1.0, "topk": 1.0},
           "cuda": {"l1": 0.9, "linf": 1.1, "topk": 1.1}}


def _step(module: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> None:
    y = module(x)
    inputs = [x] + [p for p in module.parameters() if p.requires_grad]
    torch.autograd.grad(y, inputs, dy)


def _timer(device: str, clock: str = "wall"):
    if device == "cuda":
        def run(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3
    else:
        now = time.perf_counter if clock == "wall" else time.process_time

        def run(fn):
            t0 = now()
            fn()
            return now() - t0
    return run


def saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward in one forward."""
    seen = {}

    def pack(t):
        if t.device.type != "meta" and t.numel():
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(seen.values())


def measure(kind: str, fused: bool, shape, layout: str, device: str, repeats: int, warmup: int,
            clock: str = "wall"):
    """Returns (median kind seconds, median native seconds, median paired ratio, saved ratio)."""
    torch.manual_seed(0)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(shape, device=device).contiguous(memory_format=fmt).requires_grad_(True)
    dy = torch.randn_like(x)
    native = nn.BatchNorm2d(shape[1]).to(device)
    options = {"fused": fused} if kind != "l2" else {}
    module = build_norm(kind, shape[1], **options).to(device)
    run = _timer(device, clock)
    for _ in range(warmup):
        _step(native, x, dy)
        _step(module, x, dy)
    t_native, t_kind = [], []
    for _ in range(repeats):
        t_native.append(run(lambda: _step(native, x, dy)))
        t_kind.append(run(lambda: _step(module, x, dy)))
    ratios = [a / b for a, b in zip(t_kind, t_native)]
    mem = saved_bytes(module, x) / max(saved_bytes(native, x), 1)
    return statistics.median(t_kind), statistics.median(t_native), statistics.median(ratios), mem


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (about 1 minute on 2 cores)")
    ap.add_argument("--repeats", type=int, default=None, help="timed pairs per cell (default 30, quick 9)")
    ap.add_argument("--device", default="all", choices=("cpu", "cuda", "all"))
    ap.add_argument("--kinds", nargs="+", default=list(KINDS))
    ap.add_argument("--modes", nargs="+", default=["eager", "fused"], choices=("eager", "fused"))
    ap.add_argument("--shapes", nargs="+", default=None, help="e.g. 128,16,32,32 (default: the three of SHAPES)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for the CPU runs")
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                    help="CPU timing: wall clock, or process CPU time (less sensitive to other load)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (9 if args.quick else 30)
    warmup = 2 if args.quick else 5
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else ["cpu"]
    if args.device == "all" and torch.cuda.is_available():
        devices.append("cuda")
    if "cuda" in devices and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    from normmatters.norms import kernels

    shapes = [tuple(int(v) for v in t.split(",")) for t in args.shapes] if args.shapes else SHAPES
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, repeats={repeats}, clock={args.clock}"
          + (f", GPU: {torch.cuda.get_device_name()}" if "cuda" in devices else ", no GPU")
          + ", fused kernels: " + ", ".join(f"{d} {kernels.backend(d)}" for d in devices))
    cols = "".join(f" | {d} ms | {d} BN ms | {d} ×BN | {d} target" for d in devices)
    print(f"| shape | layout | kind | mode{cols} | saved ×BN |")
    print("|" + "---|" * (5 + 4 * len(devices)))
    verdicts = {}
    for shape in shapes:
        for layout in LAYOUTS:
            for kind in args.kinds:
                for mode in args.modes:
                    row, mem = [], None
                    for device in devices:
                        t_kind, t_bn, ratio, mem = measure(kind, mode == "fused", shape, layout, device, repeats,
                                                           warmup, args.clock)
                        target = TARGETS[device].get(kind) if mode == "fused" else None
                        verdict = ""
                        if target is not None:
                            verdicts.setdefault((device, kind), []).append(ratio <= target)
                            verdict = f"≤ {target}: {'met' if ratio <= target else 'NOT met'}"
                        row.append(f" | {t_kind * 1e3:.2f} | {t_bn * 1e3:.2f} | {ratio:.2f} | {verdict}")
                    print(f"| {tuple(shape)} | {layout} | {kind} | {mode}{''.join(row)} | {mem:.2f} |", flush=True)
    for (device, kind), oks in verdicts.items():
        print(f"fused {kind}: {device} target ≤ {TARGETS[device][kind]}× native BN met in {sum(oks)}/{len(oks)} "
              "configurations")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
