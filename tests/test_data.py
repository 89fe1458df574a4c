"""Tests of normmatters.data on tiny synthetic image folders made here (no downloads, no shared data
needed; one optional check of the shared CIFAR-10 JPEG archive is skipped when it is absent)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from normmatters.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DataBundle,
    DeviceLoader,
    Loader,
    TensorDataLoader,
    build_data,
    check_config,
    class_balanced_subset,
)
from normmatters.data import image_folder as imf
from normmatters.data.image_folder import decode_images, load_image_folder, scan_image_folder

SHARED_ARCHIVE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpeg.tar.gz"
# Created in this (unsorted) order; labels must follow the sorted names.
CLASSES = ["truck", "airplane", "ship", "cat", "bird", "horse", "deer", "frog", "dog", "automobile"]
N_TRAIN, N_TEST = 6, 2  # per class
CPU = torch.device("cpu")


def _make_tree(root: Path, ext: str = "png", classes=CLASSES, n_train=N_TRAIN, n_test=N_TEST, size=(32, 32),
               test_name="test", seed=0) -> dict[str, np.ndarray]:
    """Random images under root/{train,test}/<class>/NNNN.<ext>; returns the pixels by relative name."""
    rng = np.random.default_rng(seed)
    pixels = {}
    for split, n in (("train", n_train), (test_name, n_test)):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i:04d}.{ext}")
                pixels[f"{split}/{c}/{i:04d}.{ext}"] = arr
    return pixels


def _tar(root: Path, dest: Path, mode: str = "w:gz", arcname_prefix: str = "") -> Path:
    with tarfile.open(dest, mode) as tf:
        for split in sorted(os.listdir(root)):
            tf.add(root / split, arcname=f"{arcname_prefix}{split}")
    return dest


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    root = base / "tiny10"
    pixels = _make_tree(root)
    archive = _tar(root, base / "tiny10.tar.gz")
    return {"root": root, "archive": archive, "pixels": pixels, "base": base}


@pytest.fixture(scope="module")
def tiny_jpeg(tmp_path_factory):
    base = tmp_path_factory.mktemp("tinyjpg")
    root = base / "tinyjpg"
    _make_tree(root, ext="jpg", seed=1)
    return _tar(root, base / "tinyjpg.tgz")


def _cfg(path, cache_dir, **kw):
    cfg = {"name": "cifar10", "path": None if path is None else str(path), "download": False, "cache_dir": str(cache_dir),
           "batch_size": 8, "test_batch_size": 7, "loader": "device", "augment": True}
    cfg.update(kw)
    return cfg


def _cache_files(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.rglob("*") if p.is_file()) if cache_dir.exists() else []


# ----------------------------------------------------------------------------------------------
# Image folder: decoding, archive == folder, labels, cache
# ----------------------------------------------------------------------------------------------


def test_folder_and_archives_give_identical_tensors(tiny, tmp_path):
    a = load_image_folder(tiny["root"], tmp_path / "c1", progress=False)
    b = load_image_folder(tiny["archive"], tmp_path / "c2", progress=False)
    plain_tar = _tar(tiny["root"], tmp_path / "plain.tar", mode="w")
    wrapped = _tar(tiny["root"], tmp_path / "wrapped.tar.gz", arcname_prefix="cifar/")
    c = load_image_folder(plain_tar, tmp_path / "c3", progress=False)
    d = load_image_folder(wrapped, tmp_path / "c4", progress=False)
    for other in (b, c, d):
        assert other.classes == a.classes
        for split in ("train", "test"):
            assert torch.equal(other.splits[split].images, a.splits[split].images)
            assert torch.equal(other.splits[split].labels, a.splits[split].labels)
    tr = a.splits["train"]
    assert tr.images.shape == (10 * N_TRAIN, 3, 32, 32) and tr.images.dtype == torch.uint8
    assert tr.labels.dtype == torch.int64
    assert a.splits["test"].images.shape == (10 * N_TEST, 3, 32, 32)
    # PNG is lossless: decoded pixels equal the generated ones, in sorted (class, file) order.
    names = [f"train/{c}/{i:04d}.png" for c in sorted(CLASSES) for i in range(N_TRAIN)]
    expected = torch.from_numpy(np.stack([tiny["pixels"][n] for n in names])).permute(0, 3, 1, 2)
    assert torch.equal(tr.images, expected)


def test_labels_follow_sorted_class_folder_names(tiny, tmp_path):
    res = load_image_folder(tiny["archive"], tmp_path, progress=False)
    assert res.classes == sorted(CLASSES)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        expected = torch.arange(10).repeat_interleave(n)
        assert torch.equal(res.splits[split].labels, expected)


def test_cache_is_reused_and_keyed_by_source(tiny, tmp_path, monkeypatch):
    first = load_image_folder(tiny["archive"], tmp_path, progress=False)
    assert not first.from_cache and first.cache_file.is_file()
    mtime = first.cache_file.stat().st_mtime_ns
    assert [p.name for p in _cache_files(tmp_path)] == [first.cache_file.name]

    def no_decode(*a, **k):
        raise AssertionError("decoded again although a cache file exists")

    monkeypatch.setattr(imf, "decode_images", no_decode)
    second = load_image_folder(tiny["archive"], tmp_path, progress=False)
    assert second.from_cache and second.cache_file == first.cache_file
    assert second.cache_file.stat().st_mtime_ns == mtime
    assert torch.equal(second.splits["train"].images, first.splits["train"].images)
    monkeypatch.undo()

    # A changed source (new mtime) gets a new cache entry.
    copy = tmp_path / "copy.tar.gz"
    copy.write_bytes(tiny["archive"].read_bytes())
    third = load_image_folder(copy, tmp_path, progress=False)
    assert not third.from_cache and third.cache_file != first.cache_file


def test_directory_cache_invalidated_when_a_file_changes(tmp_path):
    root = tmp_path / "d"
    _make_tree(root, classes=CLASSES[:2], n_train=2, n_test=1)
    a = load_image_folder(root, tmp_path / "cache", progress=False)
    assert load_image_folder(root, tmp_path / "cache", progress=False).from_cache
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "train" / "airplane" / "0000.png")
    os.utime(root / "train" / "airplane" / "0000.png", ns=(1, 1))
    b = load_image_folder(root, tmp_path / "cache", progress=False)
    assert not b.from_cache and b.cache_file != a.cache_file


def test_pool_decoding_matches_in_process(tiny):
    items = [(n, (tiny["root"] / n).read_bytes()) for n in sorted(tiny["pixels"])]
    serial = decode_images(items, (32, 32), workers=0, progress=False)
    pooled = decode_images(items, (32, 32), workers=2, chunk_size=16, progress=False)
    assert torch.equal(serial, pooled)


# ----------------------------------------------------------------------------------------------
# Device loader
# ----------------------------------------------------------------------------------------------


def _images(n=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n) % 10


def _normalize(x_uint8):
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1) * 255
    inv = 1 / (torch.tensor(CIFAR10_STD).view(1, 3, 1, 1) * 255)
    return (x_uint8.float() - mean) * inv


def _dev(images, labels, **kw):
    args = dict(batch_size=8, device=CPU, mean=CIFAR10_MEAN, std=CIFAR10_STD, train=True, seed=0)
    args.update(kw)
    return DeviceLoader(images, labels, **args)


def _collect(loader, epoch):
    xs, ys = zip(*loader.epoch(epoch))
    return torch.cat(xs), torch.cat(ys)


def test_device_loader_shapes_dtypes_and_len():
    x, y = _images(37)
    tr = _dev(x, y)
    assert isinstance(tr, Loader)
    assert len(tr) == 37 // 8
    batches = list(tr.epoch(0))
    assert len(batches) == len(tr)
    for xb, yb in batches:
        assert xb.shape == (8, 3, 32, 32) and xb.dtype == torch.float32 and xb.device == CPU
        assert yb.shape == (8,) and yb.dtype == torch.int64
        assert xb.is_contiguous()
    cl = _dev(x, y, channels_last=True)
    xb, _ = next(cl.epoch(0))
    assert xb.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(xb, batches[0][0])


def test_device_loader_deterministic_per_seed_and_epoch():
    x, y = _images(37)
    a, b = _dev(x, y, seed=3), _dev(x, y, seed=3)
    xa, ya = _collect(a, 5)
    # a fresh loader (as after resuming) that never ran epochs 0..4 sees the same epoch 5
    xb, yb = _collect(b, 5)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for _ in a.epoch(0):
        pass
    assert torch.equal(_collect(a, 5)[0], xa)
    assert not torch.equal(_collect(a, 6)[0], xa)  # another epoch
    assert not torch.equal(_collect(_dev(x, y, seed=4), 5)[0], xa)  # another seed
    # iterating the loader itself runs epochs 0, 1, ...
    c = _dev(x, y, seed=3)
    assert torch.equal(torch.cat([xb for xb, _ in c]), _collect(a, 0)[0])
    assert torch.equal(torch.cat([xb for xb, _ in c]), _collect(a, 1)[0])


def test_device_loader_augmentation_is_crop_and_flip():
    x, y = _images(64)
    aug = _dev(x, y, batch_size=64, seed=1)
    plain = _dev(x, y, batch_size=64, seed=1, augment=False)
    plan = aug.plan(2)
    xa, ya = next(aug.epoch(2))
    xp, yp = next(plain.epoch(2))
    assert torch.equal(plain.plan(2).order, plan.order)  # same shuffle with and without augmentation
    assert torch.equal(ya, y[plan.order]) and torch.equal(yp, ya)
    assert torch.equal(xp, _normalize(x[plan.order]))  # no augmentation: just the normalized images
    # reference: torchvision-style RandomCrop(32, padding=4) (zero fill) + horizontal flip per sample
    ref = []
    for k, i in enumerate(plan.order.tolist()):
        dy, dx = int(plan.dy[k]), int(plan.dx[k])
        img = F.pad(x[i], (4, 4, 4, 4))[:, dy : dy + 32, dx : dx + 32]
        ref.append(img.flip(-1) if plan.flip[k] else img)
    assert torch.equal(xa, _normalize(torch.stack(ref)))
    assert 0.2 < plan.flip.float().mean() < 0.8
    assert (plan.dy != 4).any() and (plan.dx != 4).any()
    changed = (xa != xp).flatten(1).any(1)
    assert changed.float().mean() > 0.8  # almost every sample got cropped and/or flipped
    zero = float(_normalize(torch.zeros(1, 3, 1, 1, dtype=torch.uint8))[0, 0, 0, 0])
    shifted = plan.dy.eq(0)  # crop starts in the padding: the first 4 rows are zero padding
    assert shifted.any() and torch.allclose(xa[shifted][:, 0, :4, :], torch.tensor(zero))


def test_test_loader_covers_every_image_once_in_order():
    x, y = _images(37)
    te = _dev(x, y, batch_size=8, train=False)
    assert len(te) == math.ceil(37 / 8)
    batches = list(te.epoch(0))
    assert [len(b[1]) for b in batches] == [8, 8, 8, 8, 5]  # keeps the last partial batch
    xt, yt = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert torch.equal(yt, y) and torch.equal(xt, _normalize(x))
    assert torch.equal(_collect(te, 3)[0], xt)  # no shuffle, no augmentation, any epoch


def test_dataloader_path_matches_device_loader():
    x, y = _images(37)
    for train in (True, False):
        kw = dict(batch_size=8, device=CPU, mean=CIFAR10_MEAN, std=CIFAR10_STD, train=train, seed=7)
        dev = DeviceLoader(x, y, **kw)
        std = TensorDataLoader(x, y, num_workers=0, **kw)
        assert len(dev) == len(std)
        for epoch in (0, 1):
            for (xa, ya), (xb, yb) in zip(dev.epoch(epoch), std.epoch(epoch), strict=True):
                assert torch.equal(xa, xb) and torch.equal(ya, yb)


# ----------------------------------------------------------------------------------------------
# build_data
# ----------------------------------------------------------------------------------------------


def test_build_data_from_archive(tiny, tiny_jpeg, tmp_path):
    b = build_data(_cfg(tiny["archive"], tmp_path), CPU, seed=0, progress=False)
    assert isinstance(b, DataBundle)
    assert b.num_classes == 10 and b.num_train == 60 and b.num_test == 20
    assert b.label == "CIFAR-10 (image folder), train 60, test 20"
    assert b.classes == sorted(CLASSES)
    assert len(b.train) == 60 // 8 and len(b.test) == math.ceil(20 / 7)
    xb, yb = next(b.train.epoch(0))
    assert xb.shape == (8, 3, 32, 32) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert sum(len(yb) for _, yb in b.test.epoch(0)) == 20
    j = build_data(_cfg(tiny_jpeg, tmp_path), CPU, seed=0, progress=False)
    assert j.label == "CIFAR-10 (JPEG copy), train 60, test 20"
    d = build_data(_cfg(tiny["root"], tmp_path, loader="dataloader", num_workers=0), CPU, seed=0, progress=False)
    assert isinstance(d.train, TensorDataLoader)
    assert torch.equal(torch.cat([x for x, _ in d.train.epoch(1)]), torch.cat([x for x, _ in b.train.epoch(1)]))


def test_build_data_accepts_omegaconf(tiny, tmp_path):
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create(
        {"data": _cfg(tiny["archive"], tmp_path, channels_last="${train.channels_last}"), "train": {"channels_last": True}}
    )
    b = build_data(cfg.data, CPU, seed=0, progress=False)
    assert next(b.train.epoch(0))[0].is_contiguous(memory_format=torch.channels_last)


def test_train_subset_class_balanced_and_independent_of_run_seed(tiny, tmp_path):
    b0 = build_data(_cfg(tiny["archive"], tmp_path, train_subset=20), CPU, seed=0, progress=False)
    b1 = build_data(_cfg(tiny["archive"], tmp_path, train_subset=20), CPU, seed=1, progress=False)
    assert b0.num_train == 20 and b0.label == "CIFAR-10 (image folder), train subset 20/60, test 20"
    assert torch.bincount(b0.train.labels, minlength=10).tolist() == [2] * 10
    assert torch.equal(b0.train.images, b1.train.images) and torch.equal(b0.train.labels, b1.train.labels)
    assert not torch.equal(_collect(b0.train, 0)[0], _collect(b1.train, 0)[0])  # run seed still shuffles
    other = build_data(_cfg(tiny["archive"], tmp_path, train_subset=20, subset_seed=1), CPU, seed=0, progress=False)
    assert not torch.equal(other.train.images, b0.train.images)
    # uneven split: class counts differ by at most one
    labels = torch.arange(1000) % 10
    idx = class_balanced_subset(labels, 23, subset_seed=0)
    counts = torch.bincount(labels[idx], minlength=10)
    assert len(idx) == 23 and len(set(idx.tolist())) == 23 and counts.max() - counts.min() <= 1
    assert torch.equal(idx, class_balanced_subset(labels, 23, subset_seed=0))


# ----------------------------------------------------------------------------------------------
# Errors: one clear line, raised before any decoding, no cache left behind
# ----------------------------------------------------------------------------------------------


def _raises(exc, match, cfg, cache_dir=None):
    with pytest.raises(exc, match=match) as info:
        build_data(cfg, CPU, seed=0, progress=False)
    msg = str(info.value)
    assert "\n" not in msg, msg
    if cache_dir is not None:
        assert _cache_files(Path(cache_dir)) == []
    return msg


def test_error_unknown_name_and_bad_numbers(tiny, tmp_path):
    _raises(ValueError, r"data.name='mnist' is not valid; choose one of: cifar10, cifar100, imagenet",
            _cfg(tiny["archive"], tmp_path, name="mnist"), tmp_path)
    for bs in (0, -3):
        _raises(ValueError, rf"data.batch_size={bs} is not valid; valid: a positive integer",
                _cfg(tiny["archive"], tmp_path, batch_size=bs), tmp_path)
    _raises(ValueError, r"data.test_batch_size=0", _cfg(tiny["archive"], tmp_path, test_batch_size=0), tmp_path)
    _raises(ValueError, r"data.train_subset=0 is not valid", _cfg(tiny["archive"], tmp_path, train_subset=0), tmp_path)
    _raises(ValueError, r"data.loader='gpu' is not valid; choose one of: device, dataloader",
            _cfg(tiny["archive"], tmp_path, loader="gpu"), tmp_path)
    # too large a subset is detected from the listing, before decoding (no cache written)
    _raises(ValueError, r"data.train_subset=61 exceeds the 60 training images",
            _cfg(tiny["archive"], tmp_path, train_subset=61), tmp_path)
    _raises(ValueError, r"data.batch_size=61 is not valid; valid: 1..60, the training images per epoch",
            _cfg(tiny["archive"], tmp_path, batch_size=61))


def test_error_missing_path_and_missing_download(tmp_path):
    _raises(FileNotFoundError, r"data.path='.*nope' does not exist", _cfg(tmp_path / "nope", tmp_path))
    not_archive = tmp_path / "x.zip"
    not_archive.write_bytes(b"zip")
    _raises(ValueError, r"is a file but not an archive", _cfg(not_archive, tmp_path))
    cfg = _cfg(None, tmp_path, download=False, download_root=str(tmp_path / "dl"))
    _raises(FileNotFoundError, r"CIFAR-10 not found in data.download_root=.*data.download=false.*data.path", cfg)
    _raises(FileNotFoundError, r"torchvision cannot download ImageNet",
            _cfg(None, tmp_path, name="imagenet"))


# (override of _cfg, exception, what the one line must name: key=value, and what is valid)
BAD_CONFIG = [
    ({"name": "mnist"}, ValueError, "data.name='mnist'", "choose one of: cifar10, cifar100, imagenet"),
    ({"batch_size": 0}, ValueError, "data.batch_size=0", "valid: a positive integer"),
    ({"batch_size": "8"}, ValueError, "data.batch_size='8'", "valid: a positive integer"),
    ({"batch_size": 8.0}, ValueError, "data.batch_size=8.0", "valid: a positive integer"),
    ({"test_batch_size": 0}, ValueError, "data.test_batch_size=0", "valid: null (= batch_size) or a positive integer"),
    ({"train_subset": 0}, ValueError, "data.train_subset=0", "valid: null or a positive integer"),
    ({"subset_seed": -1}, ValueError, "data.subset_seed=-1", "valid: a non-negative integer"),
    ({"loader": "gpu"}, ValueError, "data.loader='gpu'", "choose one of: device, dataloader"),
    ({"num_workers": -1}, ValueError, "data.num_workers=-1", "valid: a non-negative integer"),
    ({"augment": "yes"}, ValueError, "data.augment='yes'", "it must be true or false"),
    ({"drop_last": 2}, ValueError, "data.drop_last=2", "it must be true or false"),
    ({"name": "imagenet", "num_classes": 0}, ValueError, "data.num_classes=0", "valid: null (= 1000) or a positive integer"),
    ({"path": "nope"}, FileNotFoundError, "nope' does not exist", "image-folder directory or a .tar/.tar.gz/.tgz"),
    ({"name": "imagenet", "path": None}, FileNotFoundError, "data.path is null", "set data.path to a directory"),
    # sizes known from the config alone: torchvision's 50000 CIFAR training images, or the subset
    ({"path": None, "train_subset": 50001}, ValueError, "data.train_subset=50001", "valid: null or 1..50000"),
    ({"path": None, "batch_size": 50001}, ValueError, "data.batch_size=50001", "valid: 1..50000"),
    ({"train_subset": 10, "batch_size": 11}, ValueError, "data.batch_size=11", "valid: 1..10"),
]


@pytest.mark.parametrize("override,exc,value,valid", BAD_CONFIG)
def test_check_config_names_key_value_and_what_is_valid(tiny, tmp_path, override, exc, value, valid):
    cfg = _cfg(tiny["archive"], tmp_path / "cache", download_root=str(tmp_path / "dl"))
    cfg.update(override)
    if cfg["path"] == "nope":
        cfg["path"] = str(tmp_path / "nope")
    with pytest.raises(exc) as info:
        check_config(cfg)
    msg = str(info.value)
    assert value in msg and valid in msg and "\n" not in msg, msg
    with pytest.raises(exc) as info:
        build_data(cfg, CPU, seed=0, progress=False)
    assert str(info.value) == msg
    assert not (tmp_path / "cache").exists() and not (tmp_path / "dl").exists()  # nothing written


def test_check_config_fills_defaults_and_accepts_a_batch_larger_than_a_kept_last_batch(tiny, tmp_path):
    c = check_config(_cfg(tiny["archive"], tmp_path, train_subset=10, batch_size=11, drop_last=False,
                          test_batch_size=None))
    assert (c.batch_size, c.test_batch_size, c.train_subset, c.subset_seed, c.num_classes) == (11, 11, 10, 0, 10)
    assert check_config({"name": "imagenet", "path": str(tiny["archive"])}).loader == "dataloader"


def test_training_path_does_not_import_the_benchmarks():
    code = ("import sys, normmatters.data, normmatters.train, normmatters.experiments, normmatters.plots, "
            "normmatters.sweep, normmatters.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'benchmarks' or m.startswith('normmatters.bench')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
    assert not list((Path(__file__).resolve().parents[1] / "normmatters").rglob("bench*"))  # nor installed with it


def test_error_layout_problems(tmp_path):
    cache = tmp_path / "cache"
    no_test = tmp_path / "no_test"
    _make_tree(no_test, classes=CLASSES[:2], n_train=1, n_test=1, test_name="holdout")
    _raises(FileNotFoundError, r"no 'test/' or 'val/' split folder \(found: holdout, train\)", _cfg(no_test, cache), cache)
    _raises(FileNotFoundError, r"no 'test/' or 'val/' split folder", _cfg(_tar(no_test, tmp_path / "nt.tgz"), cache), cache)

    empty = tmp_path / "empty"
    _make_tree(empty, n_train=1, n_test=1)
    for f in (empty / "train" / "dog").iterdir():
        f.unlink()
    _raises(ValueError, r"class folder 'train/dog/' contains no images", _cfg(empty, cache), cache)
    _raises(ValueError, r"class folder 'train/dog/' contains no images", _cfg(_tar(empty, tmp_path / "e.tgz"), cache), cache)

    no_classes = tmp_path / "no_classes"
    (no_classes / "train").mkdir(parents=True)
    (no_classes / "test").mkdir()
    _raises(ValueError, r"'train/' has no class folders", _cfg(no_classes, cache), cache)

    few = tmp_path / "few"
    _make_tree(few, classes=CLASSES[:3], n_train=1, n_test=1)
    _raises(ValueError, r"found 3 class folders in 'train/' but CIFAR-10 has 10 classes", _cfg(few, cache), cache)
    ten = tmp_path / "ten"
    _make_tree(ten, n_train=1, n_test=1)
    _raises(ValueError, r"found 10 class folders in 'train/' but CIFAR-100 has 100 classes",
            _cfg(ten, cache, name="cifar100"), cache)

    wrong_size = tmp_path / "wrong_size"
    _make_tree(wrong_size, n_train=1, n_test=1, size=(32, 30))
    _raises(ValueError, r"train/airplane/0000.png \(image is 32x30, expected 32x32\)", _cfg(wrong_size, cache), cache)


def test_corrupt_image_is_named_and_no_cache_left(tmp_path):
    root = tmp_path / "corrupt"
    _make_tree(root, n_train=2, n_test=1)
    (root / "train" / "frog" / "0001.png").write_bytes(b"not an image")
    cache = tmp_path / "cache"
    for src in (root, _tar(root, tmp_path / "corrupt.tar.gz")):
        msg = _raises(ValueError, r"corrupt or unreadable image .*train/frog/0001\.png", _cfg(src, cache), cache)
        assert str(src) in msg
    # the same through a worker pool
    items = [(str(p.relative_to(root)), p.read_bytes()) for p in sorted(root.rglob("*.png"))]
    with pytest.raises(ValueError, match=r"corrupt or unreadable image train/frog/0001\.png"):
        decode_images(items, (32, 32), workers=2, chunk_size=4, progress=False)
    assert _cache_files(cache) == []


def test_failed_cache_write_leaves_nothing(tiny, tmp_path, monkeypatch):
    def boom(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(imf.torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        load_image_folder(tiny["archive"], tmp_path, progress=False)
    assert _cache_files(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# ImageNet path (torchvision ImageFolder + DataLoader), on a tiny train/ + val/ tree
# ----------------------------------------------------------------------------------------------


def test_imagenet_path_tiny(tmp_path):
    root = tmp_path / "inet"
    _make_tree(root, classes=["n02", "n01", "n03"], n_train=3, n_test=2, size=(40, 30), test_name="val")
    cfg = {"name": "imagenet", "path": str(_tar(root, tmp_path / "inet.tar")), "cache_dir": str(tmp_path / "c"),
           "num_classes": 3, "batch_size": 4, "test_batch_size": 4, "num_workers": 0, "train_subset": 6}
    b = build_data(cfg, CPU, seed=0, progress=False)
    assert b.num_classes == 3 and b.num_train == 6 and b.num_test == 6 and b.classes == ["n01", "n02", "n03"]
    assert b.label == "ImageNet-format (3 classes), train subset 6/9, test 6"
    assert len(b.train) == 1 and len(b.test) == 2
    x, y = next(b.train.epoch(0))
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.cat([y for _, y in b.test.epoch(0)]).tolist() == [0, 0, 1, 1, 2, 2]
    cfg["num_classes"] = None
    with pytest.raises(ValueError, match=r"found 3 class folders in 'train/' but ImageNet has 1000 classes"):
        build_data(cfg, CPU, seed=0, progress=False)


# ----------------------------------------------------------------------------------------------
# Optional: the shared CIFAR-10 JPEG copy (listing only; decodes nothing unless a cache exists)
# ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_ARCHIVE.is_file(), reason="shared CIFAR-10 JPEG archive not present")
def test_shared_cifar10_jpeg_archive_layout():
    index = scan_image_folder(SHARED_ARCHIVE, num_classes=10, dataset="CIFAR-10")
    assert index.counts == {"train": 50000, "test": 10000}
    assert index.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert index.extensions == [".jpg"]
    cache = imf.cached_file(SHARED_ARCHIVE, os.path.expanduser("~/.cache/normmatters/cache"))
    if cache is not None:  # decoded before (e.g. by `python -m normmatters.data`): check it loads fast
        b = build_data({"name": "cifar10", "path": str(SHARED_ARCHIVE), "batch_size": 500, "train_subset": 1000},
                       CPU, seed=0, progress=False)
        assert b.label == "CIFAR-10 (JPEG copy), train subset 1000/50000, test 10000"
        assert torch.bincount(b.train.labels).tolist() == [100] * 10
