"""Read an image-folder tree (or a .tar / .tar.gz / .tgz archive of one), decode it once into
uint8 tensors and cache the result as a single tensor file.

Layout (the ImageNet / torchvision ``ImageFolder`` convention)::

    <root>/train/<class>/<image>      <root>/test/<class>/<image>   (or val/ instead of test/)

A single wrapping directory (``<archive>/cifar10/train/...``) is accepted too. Labels follow the
sorted class-folder names of the train split; the evaluation split must have the same classes.

The cache file is keyed by the source's identity: for an archive its resolved path, size and
mtime; for a directory a hash of every image's relative path, size and mtime. Changing the
source therefore invalidates the cache. Cache files are written atomically (temp file in the
cache dir, then ``os.replace``), so an interrupted or failed decode never leaves a half-written
cache behind.
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing as mp
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
CACHE_VERSION = 1
# Default split names: canonical name -> accepted folder names, in order of preference.
DEFAULT_SPLITS: dict[str, tuple[str, ...]] = {"train": ("train",), "test": ("test", "val")}
# Below this many images, decoding runs in the calling process (a pool costs more than it saves).
POOL_MIN_IMAGES = 4096


# --------------------------------------------------------------------------------------------
# Source handling and scanning (cheap: names and sizes only, no decoding)
# --------------------------------------------------------------------------------------------


def is_archive(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return any(name.endswith(s) for s in ARCHIVE_SUFFIXES)


def _archive_stem(path: Path) -> str:
    name = path.name
    for s in (".tar.gz", ".tgz", ".tar"):
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def _is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMG_EXTENSIONS)


def resolve_source(path: str | os.PathLike, key: str = "data.path") -> Path:
    """Expand ``~`` and check that ``path`` is an existing directory or a supported archive."""
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        raise FileNotFoundError(
            f"{key}={str(path)!r} does not exist; point it at an image-folder directory or a "
            f".tar/.tar.gz/.tgz archive of one (with train/ and test/ class folders)"
        )
    if p.is_file() and not is_archive(p):
        raise ValueError(
            f"{key}={str(path)!r} is a file but not an archive; valid: a directory or a "
            f"{'/'.join(ARCHIVE_SUFFIXES)} archive of an image-folder tree"
        )
    return p.resolve()


@dataclass
class SplitIndex:
    """Files of one split: names relative to the source root (``train/cat/0001.jpg``)."""

    folder: str  # actual folder name (e.g. "val" for the canonical "test")
    files: list[str]
    labels: list[int]


@dataclass
class FolderIndex:
    source: Path
    kind: str  # "dir" | "archive"
    root: str  # wrapping directory inside the source ("" if none)
    classes: list[str]
    splits: dict[str, SplitIndex]
    identity: dict = field(default_factory=dict)
    payload: dict[str, bytes] | None = None  # archive member bytes, keyed by relative name

    @property
    def counts(self) -> dict[str, int]:
        return {k: len(v.files) for k, v in self.splits.items()}

    @property
    def extensions(self) -> list[str]:
        exts = {os.path.splitext(f)[1].lower() for s in self.splits.values() for f in s.files}
        return sorted(exts)


def _pick_root(top_dirs: dict[str, set[str]], wanted: dict[str, tuple[str, ...]], source: Path) -> str:
    """``top_dirs`` maps a candidate root ("" or a wrapper dir) to the directory names under it."""
    names = {n for alts in wanted.values() for n in alts}
    if top_dirs.get("", set()) & names:
        return ""
    wrappers = [r for r, subs in top_dirs.items() if r and subs & names]
    if len(wrappers) == 1:
        return wrappers[0]
    return ""  # the missing-split error below names what was expected


def _split_folder(subdirs: set[str], canonical: str, alts: tuple[str, ...], source: Path, root: str) -> str:
    for a in alts:
        if a in subdirs:
            return a
    where = f"{source}" + (f"!{root}/" if root else "")
    want = " or ".join(f"'{a}/'" for a in alts)
    found = ", ".join(sorted(subdirs)) or "nothing"
    raise FileNotFoundError(
        f"{where}: no {want} split folder (found: {found}); expected an image-folder tree "
        f"<root>/train/<class>/<image> and <root>/test/<class>/<image>"
    )


def _build_index(
    source: Path,
    kind: str,
    root: str,
    tree: dict[str, dict[str, list[str]]],
    wanted: dict[str, tuple[str, ...]],
    num_classes: int | None,
    dataset: str,
) -> FolderIndex:
    """``tree`` maps split folder -> class folder -> sorted image names (relative to the root)."""
    where = f"{source}" + (f"!{root}/" if root else "")
    chosen = {c: _split_folder(set(tree), c, alts, source, root) for c, alts in wanted.items()}
    first = next(iter(wanted))
    classes = sorted(tree[chosen[first]])
    if not classes:
        raise ValueError(f"{where}: '{chosen[first]}/' has no class folders; expected {chosen[first]}/<class>/<image>")
    if num_classes is not None and len(classes) != num_classes:
        raise ValueError(
            f"{where}: found {len(classes)} class folders in '{chosen[first]}/' but {dataset} has "
            f"{num_classes} classes"
        )
    class_to_idx = {c: i for i, c in enumerate(classes)}
    splits: dict[str, SplitIndex] = {}
    for canonical, folder in chosen.items():
        cls_files = tree[folder]
        if sorted(cls_files) != classes:
            extra = sorted(set(cls_files) - set(classes))
            missing = sorted(set(classes) - set(cls_files))
            raise ValueError(
                f"{where}: class folders of '{folder}/' differ from '{chosen[first]}/' "
                f"(missing: {missing[:5] or 'none'}, extra: {extra[:5] or 'none'})"
            )
        files: list[str] = []
        labels: list[int] = []
        for c in classes:
            names = cls_files[c]
            if not names:
                raise ValueError(
                    f"{where}: class folder '{folder}/{c}/' contains no images "
                    f"(valid extensions: {' '.join(IMG_EXTENSIONS)})"
                )
            files.extend(names)
            labels.extend([class_to_idx[c]] * len(names))
        splits[canonical] = SplitIndex(folder=folder, files=files, labels=labels)
    return FolderIndex(source=source, kind=kind, root=root, classes=classes, splits=splits)


def _scan_dir(
    source: Path, wanted: dict[str, tuple[str, ...]], num_classes: int | None, dataset: str, fingerprint: bool
) -> FolderIndex:
    top = {"": {e.name for e in os.scandir(source) if e.is_dir()}}
    for d in list(top[""]):
        try:
            top[d] = {e.name for e in os.scandir(source / d) if e.is_dir()}
        except OSError:
            pass
    root = _pick_root(top, wanted, source)
    base = source / root if root else source
    subdirs = top[root]
    tree: dict[str, dict[str, list[str]]] = {s: {} for s in subdirs}
    h = hashlib.sha256()
    prefix = f"{root}/" if root else ""
    for canonical, alts in wanted.items():
        folder = _split_folder(subdirs, canonical, alts, source, root)
        for cls_entry in sorted(os.scandir(base / folder), key=lambda e: e.name):
            if not cls_entry.is_dir() or cls_entry.name.startswith("."):
                continue
            names = []
            for f in sorted(os.scandir(cls_entry.path), key=lambda e: e.name):
                if f.is_file() and _is_image_name(f.name):
                    rel = f"{prefix}{folder}/{cls_entry.name}/{f.name}"
                    names.append(rel)
                    if fingerprint:
                        st = f.stat()
                        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            tree[folder][cls_entry.name] = names
    index = _build_index(source, "dir", root, tree, wanted, num_classes, dataset)
    if fingerprint:
        index.identity = {"kind": "dir", "source": str(source), "listing_sha256": h.hexdigest()}
    return index


def _archive_identity(source: Path) -> dict:
    st = source.stat()
    return {"kind": "archive", "source": str(source), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _scan_archive(
    source: Path,
    wanted: dict[str, tuple[str, ...]],
    num_classes: int | None,
    dataset: str,
    read_bytes: bool,
    progress: bool,
) -> FolderIndex:
    """One sequential pass over the archive: names (and, if ``read_bytes``, the image bytes)."""
    from tqdm.auto import tqdm

    split_names = {n for alts in wanted.values() for n in alts}
    # candidate root ("" or wrapper) -> split folder -> class -> names
    trees: dict[str, dict[str, dict[str, list[str]]]] = {}
    top: dict[str, set[str]] = {}
    payload: dict[str, bytes] = {}
    try:
        with tarfile.open(source, "r:*") as tf, tqdm(
            desc=f"read {source.name}", unit=" files", disable=not progress, leave=False
        ) as bar:
            for m in tf:
                name = m.name
                while name.startswith("./"):
                    name = name[2:]
                parts = [p for p in name.split("/") if p]
                if not parts or not (m.isfile() or m.isdir()):
                    continue
                # Directory names at the top two levels (to find the split root).
                if len(parts) >= 2 or m.isdir():
                    top.setdefault("", set()).add(parts[0])
                if len(parts) >= 3 or (m.isdir() and len(parts) == 2):
                    top.setdefault(parts[0], set()).add(parts[1])
                # split/class[/image] under root "" or under a single wrapper directory.
                for r, rest in (("", parts), (parts[0], parts[1:])):
                    if len(rest) < 2 or rest[0] not in split_names or rest[1].startswith("."):
                        continue
                    if not (len(rest) >= 3 or m.isdir()):
                        continue  # a loose file directly inside the split folder
                    names = trees.setdefault(r, {}).setdefault(rest[0], {}).setdefault(rest[1], [])
                    if m.isfile() and len(rest) == 3 and _is_image_name(rest[2]):
                        rel = "/".join(parts)
                        names.append(rel)
                        if read_bytes and rel not in payload:
                            f = tf.extractfile(m)
                            payload[rel] = f.read() if f is not None else b""
                            bar.update(1)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(f"{source}: cannot read archive ({type(e).__name__}: {e})") from None
    root = _pick_root(top, wanted, source)
    tree: dict[str, dict[str, list[str]]] = {s: {} for s in top.get(root, set())}
    for split, classes in trees.get(root, {}).items():
        tree[split] = {c: sorted(v) for c, v in classes.items()}
    index = _build_index(source, "archive", root, tree, wanted, num_classes, dataset)
    index.identity = _archive_identity(source)
    index.payload = payload if read_bytes else None
    return index


def scan_image_folder(
    path: str | os.PathLike,
    splits: dict[str, tuple[str, ...]] | None = None,
    num_classes: int | None = None,
    dataset: str = "the dataset",
    *,
    read_bytes: bool = False,
    fingerprint: bool = True,
    progress: bool = False,
) -> FolderIndex:
    """List (without decoding) an image-folder directory or archive and validate its structure.

    Raises ``FileNotFoundError``/``ValueError`` with one line for a missing path, a missing
    split, a split without class folders, an empty class folder, a class-count mismatch with
    ``num_classes`` or differing class folders between splits.
    """
    wanted = dict(splits or DEFAULT_SPLITS)
    source = resolve_source(path)
    if source.is_dir():
        return _scan_dir(source, wanted, num_classes, dataset, fingerprint)
    return _scan_archive(source, wanted, num_classes, dataset, read_bytes, progress)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _decode_chunk(args) -> tuple[np.ndarray | None, tuple[str, str] | None]:
    """Decode a chunk of (name, bytes-or-path) items into one K x H x W x 3 uint8 array.

    Returns ``(array, None)`` or ``(None, (name, reason))`` for the first unreadable image.
    Module-level so that it pickles into pool workers.
    """
    from PIL import Image

    items, hw = args
    out = np.empty((len(items), hw[0], hw[1], 3), dtype=np.uint8)
    for i, (name, data) in enumerate(items):
        try:
            src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
            with Image.open(src) as im:
                im = im.convert("RGB")
                arr = np.asarray(im)
        except Exception as e:  # noqa: BLE001 - any decoder failure means "corrupt image"
            if type(e).__name__ == "UnidentifiedImageError":
                return None, (name, "not a recognizable image file")
            return None, (name, f"{type(e).__name__}: {e}")
        if arr.shape[:2] != tuple(hw):
            return None, (name, f"image is {arr.shape[1]}x{arr.shape[0]}, expected {hw[1]}x{hw[0]}")
        out[i] = arr
    return out, None


def decode_images(
    items: Sequence[tuple[str, bytes | str]],
    image_size: tuple[int, int],
    *,
    where: str = "",
    workers: int | None = None,
    progress: bool = True,
    desc: str = "decode",
    chunk_size: int = 512,
) -> torch.Tensor:
    """Decode images (bytes or file paths) with PIL into an N x 3 x H x W uint8 tensor.

    ``workers``: processes for a multiprocessing pool (None: all CPU cores when there are at least
    ``POOL_MIN_IMAGES`` images, else in-process; 0/1: in-process). Raises ``ValueError`` naming
    the first corrupt/unreadable or wrongly-sized image.
    """
    from tqdm.auto import tqdm

    n = len(items)
    hw = (int(image_size[0]), int(image_size[1]))
    if workers is None:
        workers = (os.cpu_count() or 1) if n >= POOL_MIN_IMAGES else 0
    out = np.empty((n, hw[0], hw[1], 3), dtype=np.uint8)
    chunks = [(list(items[i : i + chunk_size]), hw) for i in range(0, n, chunk_size)]
    pool = None
    try:
        if workers > 1 and len(chunks) > 1:
            methods = mp.get_all_start_methods()
            ctx = mp.get_context("fork" if "fork" in methods else None)
            pool = ctx.Pool(min(workers, len(chunks)))
            results = pool.imap(_decode_chunk, chunks)
        else:
            results = map(_decode_chunk, chunks)
        with tqdm(total=n, desc=desc, unit=" img", disable=not progress, leave=False) as bar:
            pos = 0
            for arr, err in results:
                if err is not None:
                    raise ValueError(f"corrupt or unreadable image {where}{err[0]} ({err[1]})")
                out[pos : pos + len(arr)] = arr
                pos += len(arr)
                bar.update(len(arr))
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


@dataclass
class DecodedSplit:
    images: torch.Tensor  # N x 3 x H x W uint8
    labels: torch.Tensor  # N int64


@dataclass
class DecodedFolder:
    source: str
    classes: list[str]
    splits: dict[str, DecodedSplit]
    extensions: list[str]
    cache_file: Path | None
    from_cache: bool
    seconds: float  # wall time of this load (decode + cache write, or cache read)


def _cache_key(identity: dict, wanted: dict[str, tuple[str, ...]], image_size: tuple[int, int]) -> str:
    import PIL

    material = repr(
        (CACHE_VERSION, f"PIL-{PIL.__version__}", sorted(identity.items()), sorted(wanted.items()), tuple(image_size))
    )
    return hashlib.sha256(material.encode()).hexdigest()[:20]


def cache_file_for(path: Path, cache_dir: Path, key: str) -> Path:
    stem = _archive_stem(path) if path.is_file() else path.name
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem) or "data"
    return cache_dir / f"{stem}-{key}.pt"


def cached_file(
    path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    *,
    splits: dict[str, tuple[str, ...]] | None = None,
    image_size: tuple[int, int] = (32, 32),
) -> Path | None:
    """The cache file that :func:`load_image_folder` would use for ``path``, if it exists."""
    wanted = dict(splits or DEFAULT_SPLITS)
    source = resolve_source(path)
    if source.is_dir():
        identity = _scan_dir(source, wanted, None, "the dataset", fingerprint=True).identity
    else:
        identity = _archive_identity(source)
    f = cache_file_for(source, Path(os.path.expanduser(str(cache_dir))), _cache_key(identity, wanted, image_size))
    return f if f.is_file() else None


def atomic_torch_save(obj, dest: Path) -> None:
    """``torch.save`` to a temp file next to ``dest``, fsync, then ``os.replace``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _load_cache(path: Path) -> dict | None:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - an unreadable cache is rebuilt, not fatal
        log.warning("ignoring unreadable cache file %s (%s: %s); decoding again", path, type(e).__name__, e)
        return None
    if not isinstance(obj, dict) or obj.get("version") != CACHE_VERSION:
        return None
    return obj


def load_image_folder(
    path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    *,
    splits: dict[str, tuple[str, ...]] | None = None,
    num_classes: int | None = None,
    dataset: str = "the dataset",
    image_size: tuple[int, int] = (32, 32),
    validate: Callable[[list[str], dict[str, int]], None] | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> DecodedFolder:
    """Decode an image-folder directory/archive into uint8 tensors, using/creating a cache file.

    ``validate(classes, counts)`` runs after the (cheap) listing and before the (expensive)
    decoding -- and also on a cache hit -- so callers can reject e.g. a too-large subset early.
    Every image must decode to ``image_size`` (H, W); grayscale/RGBA images are converted to RGB.
    """
    t0 = time.perf_counter()
    wanted = dict(splits or DEFAULT_SPLITS)
    source = resolve_source(path)
    cache_dir = Path(os.path.expanduser(str(cache_dir)))

    index: FolderIndex | None = None
    if source.is_dir():
        index = _scan_dir(source, wanted, num_classes, dataset, fingerprint=True)
        identity = index.identity
    else:
        identity = _archive_identity(source)
    cache_file = cache_file_for(source, cache_dir, _cache_key(identity, wanted, image_size))

    cached = _load_cache(cache_file) if cache_file.is_file() else None
    if cached is not None:
        classes = list(cached["classes"])
        where = f"{source}"
        if num_classes is not None and len(classes) != num_classes:
            raise ValueError(
                f"{where}: found {len(classes)} class folders but {dataset} has {num_classes} classes"
            )
        dsplits = {
            k: DecodedSplit(images=v["images"], labels=v["labels"]) for k, v in cached["splits"].items()
        }
        if validate is not None:
            validate(classes, {k: len(v.labels) for k, v in dsplits.items()})
        dt = time.perf_counter() - t0
        log.info("loaded %s from cache %s in %.2fs", source.name, cache_file, dt)
        return DecodedFolder(
            source=str(source),
            classes=classes,
            splits=dsplits,
            extensions=list(cached.get("extensions", [])),
            cache_file=cache_file,
            from_cache=True,
            seconds=dt,
        )

    if index is None:
        index = _scan_archive(source, wanted, num_classes, dataset, read_bytes=True, progress=progress)
    if validate is not None:
        validate(index.classes, index.counts)

    base = source / index.root if (source.is_dir() and index.root) else source
    dsplits = {}
    for canonical, sp in index.splits.items():
        if index.kind == "dir":
            prefix = f"{index.root}/" if index.root else ""
            items = [(f, str(base / f[len(prefix):])) for f in sp.files]
        else:
            assert index.payload is not None
            items = [(f, index.payload[f]) for f in sp.files]
        where = f"{source}/" if index.kind == "dir" else f"{source}!"
        images = decode_images(
            items,
            image_size,
            where=where,
            workers=workers,
            progress=progress,
            desc=f"decode {source.name} {sp.folder}",
        )
        dsplits[canonical] = DecodedSplit(images=images, labels=torch.tensor(sp.labels, dtype=torch.int64))
    index.payload = None

    obj = {
        "version": CACHE_VERSION,
        "source": str(source),
        "identity": {k: v for k, v in identity.items()},
        "classes": list(index.classes),
        "extensions": index.extensions,
        "splits": {k: {"images": v.images, "labels": v.labels} for k, v in dsplits.items()},
    }
    atomic_torch_save(obj, cache_file)
    dt = time.perf_counter() - t0
    log.info("decoded %s (%s) in %.1fs; cached to %s", source.name, index.counts, dt, cache_file)
    return DecodedFolder(
        source=str(source),
        classes=list(index.classes),
        splits=dsplits,
        extensions=index.extensions,
        cache_file=cache_file,
        from_cache=False,
        seconds=dt,
    )


def extract_archive(path: str | os.PathLike, cache_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Extract an archive once into ``cache_dir/<stem>-<key>/`` (atomic rename), reuse afterwards."""
    from tqdm.auto import tqdm

    source = resolve_source(path)
    if source.is_dir():
        return source
    cache_dir = Path(os.path.expanduser(str(cache_dir)))
    key = hashlib.sha256(repr(sorted(_archive_identity(source).items())).encode()).hexdigest()[:20]
    dest = cache_dir / f"{_archive_stem(source)}-{key}"
    if dest.is_dir():
        return dest
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=cache_dir))
    try:
        with tarfile.open(source, "r:*") as tf:
            for m in tqdm(tf, desc=f"extract {source.name}", unit=" files", disable=not progress):
                if m.isfile() or m.isdir():
                    tf.extract(m, tmp, filter="data")
        os.replace(tmp, dest)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if dest.is_dir():  # another process won the race
            return dest
        raise
    return dest
