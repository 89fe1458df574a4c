"""What an image-folder tree, or a .tar / .tar.gz / .tgz archive of one, contains: listed and
checked without decoding anything.

Layout (the ImageNet / torchvision ``ImageFolder`` convention)::

    <root>/train/<class>/<image>      <root>/test/<class>/<image>   (or val/ instead of test/)

A single wrapping directory (``<archive>/cifar10/train/...``) is accepted too. Labels follow the
sorted class-folder names of the train split; the other split must have the same classes.
A source's identity (for cache keys) is an archive's path, size and mtime, or a hash of every
image's path, size and mtime in a directory, so replacing or editing the data invalidates anything
derived from it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from normmatters.io import fsync_path

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
# canonical split name -> accepted folder names, in order of preference
DEFAULT_SPLITS: dict[str, tuple[str, ...]] = {"train": ("train",), "test": ("test", "val")}


# ----------------------------------------------------------------------------------------------
# The source: a directory or an archive
# ----------------------------------------------------------------------------------------------


def archive_stem(path: Path) -> str:
    for s in ARCHIVE_SUFFIXES:
        if path.name.lower().endswith(s):
            return path.name[: -len(s)]
    return path.name


def resolve_source(path: str | os.PathLike, key: str = "data.path") -> Path:
    """Expand ``~`` and check that ``path`` is an existing directory or a supported archive."""
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        raise FileNotFoundError(
            f"{key}={str(path)!r} does not exist; point it at an image-folder directory or a "
            f".tar/.tar.gz/.tgz archive of one (with train/ and test/ class folders)"
        )
    if p.is_file() and not p.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise ValueError(
            f"{key}={str(path)!r} is a file but not an archive; valid: a directory or a "
            f"{'/'.join(ARCHIVE_SUFFIXES)} archive of an image-folder tree"
        )
    return p.resolve()


def archive_identity(source: Path) -> dict:
    st = source.stat()
    return {"kind": "archive", "source": str(source), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


# ----------------------------------------------------------------------------------------------
# Listing and checking the layout (nothing decoded)
# ----------------------------------------------------------------------------------------------


@dataclass
class SplitIndex:
    folder: str  # the folder's actual name (e.g. "val" for the canonical "test")
    files: list[str]  # relative to the source (``[<wrapper>/]train/cat/0001.jpg``), sorted by class then name
    labels: list[int]


@dataclass
class FolderIndex:
    source: Path
    kind: str  # "dir" | "archive"
    root: str  # wrapping directory inside the source ("" if none)
    classes: list[str]
    splits: dict[str, SplitIndex]
    identity: dict = field(default_factory=dict)
    payload: dict[str, bytes] | None = None  # an archive's image bytes by name, read in the listing pass

    @property
    def counts(self) -> dict[str, int]:
        return {k: len(v.files) for k, v in self.splits.items()}

    @property
    def extensions(self) -> list[str]:
        return sorted({os.path.splitext(f)[1].lower() for s in self.splits.values() for f in s.files})


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
    """List (without decoding) an image-folder directory or archive and check its layout.

    Raises ``FileNotFoundError``/``ValueError`` with one line for a missing path, a missing split,
    a split without class folders, an empty class folder, a class count other than
    ``num_classes`` or class folders that differ between splits.
    """
    wanted = dict(splits or DEFAULT_SPLITS)
    source = resolve_source(path)
    if source.is_dir():
        dirs, files = _list_dir(source)
        index = _index(source, "dir", dirs, files, wanted, num_classes, dataset)
        if fingerprint:
            h = hashlib.sha256()
            for f in (f for sp in index.splits.values() for f in sp.files):
                st = os.stat(source / f)
                h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            index.identity = {"kind": "dir", "source": str(source), "listing_sha256": h.hexdigest()}
        return index
    split_names = {n for alts in wanted.values() for n in alts}
    dirs, files, payload = _list_archive(source, split_names, read_bytes, progress)
    index = _index(source, "archive", dirs, files, wanted, num_classes, dataset)
    index.identity = archive_identity(source)
    index.payload = payload if read_bytes else None
    return index


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMG_EXTENSIONS)


def _list_dir(source: Path) -> tuple[set[str], list[str]]:
    """Relative names of the directories down to ``<wrapper>/<split>/<class>`` and of the files in them."""
    dirs: set[str] = set()
    files: list[str] = []
    for path, subdirs, names in os.walk(source, followlinks=True):
        rel = Path(path).relative_to(source).as_posix()
        prefix = "" if rel == "." else f"{rel}/"
        if prefix.count("/") >= 3:
            subdirs.clear()  # below a class folder nothing counts
        dirs.update(prefix + d for d in subdirs)
        files.extend(prefix + n for n in names)
    return dirs, files


def _list_archive(source: Path, split_names: set[str], read_bytes: bool, progress: bool):
    """One sequential pass: member names and, if ``read_bytes``, the bytes of every image that may be in a split."""
    from tqdm.auto import tqdm

    dirs: set[str] = set()
    files: set[str] = set()
    payload: dict[str, bytes] = {}
    try:
        with tarfile.open(source, "r:*") as tf, tqdm(
            desc=f"read {source.name}", unit=" files", disable=not progress, leave=False
        ) as bar:
            for m in tf:
                parts = [p for p in m.name.split("/") if p and p != "."]
                name = "/".join(parts)
                if not parts:
                    continue
                if m.isdir():
                    dirs.add(name)
                elif m.isfile() and name not in files:
                    files.add(name)
                    in_class = len(parts) in (3, 4) and parts[-3] in split_names and not parts[-2].startswith(".")
                    if read_bytes and in_class and _is_image(name):
                        f = tf.extractfile(m)
                        payload[name] = f.read() if f is not None else b""
                        bar.update(1)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(f"{source}: cannot read archive ({type(e).__name__}: {e})") from None
    return dirs, files, payload


def _index(source: Path, kind: str, dirs: set[str], files, wanted: dict[str, tuple[str, ...]],
           num_classes: int | None, dataset: str) -> FolderIndex:
    """Find the split and class folders among the listed names and check the layout."""
    images: dict[str, list[str]] = {}  # folder -> its image files
    folders = set(dirs)
    for f in files:
        parent = f.rpartition("/")[0]
        folders.add(parent)  # an archive need not list its directories
        if _is_image(f):
            images.setdefault(parent, []).append(f)
    children: dict[str, set[str]] = {}  # folder ("" = the source) -> names of its subfolders
    for d in folders:
        parts = d.split("/") if d else []
        for i, part in enumerate(parts):
            children.setdefault("/".join(parts[:i]), set()).add(part)

    names = {n for alts in wanted.values() for n in alts}
    top = children.get("", set())
    wrappers = [w for w in top if children.get(w, set()) & names]
    root = wrappers[0] if not top & names and len(wrappers) == 1 else ""  # else the error below says what is missing
    prefix = f"{root}/" if root else ""
    where = f"{source}" + (f"!{root}/" if root else "")

    def class_folders(split: str) -> list[str]:
        return sorted(c for c in children.get(prefix + split, ()) if not c.startswith("."))

    found = children.get(root, set())
    chosen: dict[str, str] = {}
    for canonical, alts in wanted.items():
        chosen[canonical] = next((a for a in alts if a in found), "")
        if not chosen[canonical]:
            raise FileNotFoundError(
                f"{where}: no {' or '.join(repr(a + '/') for a in alts)} split folder "
                f"(found: {', '.join(sorted(found)) or 'nothing'}); expected an image-folder tree "
                f"<root>/train/<class>/<image> and <root>/test/<class>/<image>"
            )
    first = chosen[next(iter(wanted))]
    classes = class_folders(first)
    if not classes:
        raise ValueError(f"{where}: '{first}/' has no class folders; expected {first}/<class>/<image>")
    if num_classes is not None and len(classes) != num_classes:
        raise ValueError(f"{where}: found {len(classes)} class folders in '{first}/' but {dataset} has {num_classes} classes")
    splits = {}
    for canonical, folder in chosen.items():
        here = class_folders(folder)
        if here != classes:
            missing, extra = sorted(set(classes) - set(here)), sorted(set(here) - set(classes))
            raise ValueError(f"{where}: class folders of '{folder}/' differ from '{first}/' "
                             f"(missing: {missing[:5] or 'none'}, extra: {extra[:5] or 'none'})")
        sp = SplitIndex(folder=folder, files=[], labels=[])
        for label, c in enumerate(classes):
            names_c = sorted(images.get(f"{prefix}{folder}/{c}", []))
            if not names_c:
                raise ValueError(f"{where}: class folder '{folder}/{c}/' contains no images "
                                 f"(valid extensions: {' '.join(IMG_EXTENSIONS)})")
            sp.files += names_c
            sp.labels += [label] * len(names_c)
        splits[canonical] = sp
    return FolderIndex(source=source, kind=kind, root=root, classes=classes, splits=splits)


# ----------------------------------------------------------------------------------------------
# Extraction (for loaders that read files, not tensors: ImageNet)
# ----------------------------------------------------------------------------------------------


def extract_archive(path: str | os.PathLike, cache_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Extract an archive once into ``cache_dir/<stem>-<key>/`` and reuse it afterwards."""
    from tqdm.auto import tqdm

    source = resolve_source(path)
    if source.is_dir():
        return source
    cache_dir = Path(os.path.expanduser(str(cache_dir)))
    key = hashlib.sha256(repr(sorted(archive_identity(source).items())).encode()).hexdigest()[:20]
    dest = cache_dir / f"{archive_stem(source)}-{key}"
    if dest.is_dir():
        return dest
    cache_dir.mkdir(parents=True, exist_ok=True)
    # a directory, so not io.atomic_write_bytes: extract into a temp dir, then rename it
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=cache_dir))
    try:
        with tarfile.open(source, "r:*") as tf:
            for m in tqdm(tf, desc=f"extract {source.name}", unit=" files", disable=not progress):
                if m.isfile() or m.isdir():
                    tf.extract(m, tmp, filter="data")
        os.sync()  # the extracted files reach the disk before the rename makes them the cache
        os.replace(tmp, dest)
        fsync_path(cache_dir, directory=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if dest.is_dir():  # another process won the race
            return dest
        raise
    return dest
