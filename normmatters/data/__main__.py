"""Decode/cache a dataset and time it: ``python -m normmatters.data --path ../shared/data/cifar10-jpeg.tar.gz``.

The first call decodes the images and writes the cache file; later calls load the cache. With
``--epochs N`` it also times N epochs of the training loader on ``--device``.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from . import DATASETS, build_data
from .config import DEFAULTS, LOADERS


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m normmatters.data", description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="cifar10", choices=list(DATASETS))
    ap.add_argument("--path", default=None, help="image-folder dir or .tar/.tar.gz/.tgz (default: torchvision)")
    ap.add_argument("--cache-dir", default=DEFAULTS["cache_dir"])
    ap.add_argument("--download-root", default=DEFAULTS["download_root"])
    ap.add_argument("--no-download", action="store_true")
    ap.add_argument("--loader", default=DEFAULTS["loader"], choices=LOADERS)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--epochs", type=int, default=0, help="also time this many training epochs of the loader")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave the default)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    cfg = {
        "name": args.name, "path": args.path, "cache_dir": args.cache_dir, "download_root": args.download_root,
        "download": not args.no_download, "loader": args.loader, "batch_size": args.batch_size,
        "num_workers": args.num_workers, "channels_last": args.channels_last,
    }
    device = torch.device(args.device)
    t0 = time.perf_counter()
    data = build_data(cfg, device, seed=0, progress=not args.no_progress)
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(f"{data.label}: build_data {time.perf_counter() - t0:.2f}s (device {device})")
    for e in range(args.epochs):
        t1 = time.perf_counter()
        n = 0
        for _, y in data.train.epoch(e):
            n += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t1
        print(f"epoch {e}: {len(data.train)} batches, {n} images in {dt:.2f}s ({n / dt:,.0f} img/s, {args.loader} loader)")


if __name__ == "__main__":
    main()
