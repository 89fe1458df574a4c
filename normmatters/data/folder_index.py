"""List and validate an image-folder tree (or an archive of one) without decoding anything.

Layout (the ImageNet / torchvision ``ImageFolder`` convention)::

    <root>/train/<class>/<image>      <root>/test/<class>/<image>   (or val/ instead of test/)

A single wrapping directory (``<archive>/cifar10/train/...``) is accepted too. Labels follow the
sorted class-folder names of the train split; the evaluation split must have the same classes.

A directory's identity (for cache keys) is a hash of every image's relative path, size and mtime.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from .source import archive_identity, resolve_source

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
# Default split names: canonical name -> accepted folder names, in order of preference.
DEFAULT_SPLITS: dict[str, tuple[str, ...]] = {"train": ("train",), "test": ("test", "val")}


def _is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMG_EXTENSIONS)


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
    index.identity = archive_identity(source)
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
