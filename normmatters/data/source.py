"""Where an image folder comes from: a directory, or a .tar / .tar.gz / .tgz archive of one.

An archive is identified by its resolved path, size and mtime, so replacing or touching it
invalidates anything derived from it (the tensor cache, an extracted copy).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_archive(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return any(name.endswith(s) for s in ARCHIVE_SUFFIXES)


def archive_stem(path: Path) -> str:
    name = path.name
    for s in (".tar.gz", ".tgz", ".tar"):
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


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


def archive_identity(source: Path) -> dict:
    st = source.stat()
    return {"kind": "archive", "source": str(source), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def extract_archive(path: str | os.PathLike, cache_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Extract an archive once into ``cache_dir/<stem>-<key>/`` (atomic rename), reuse afterwards."""
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
    # A directory, so not runs.atomic_write_bytes: extract into a temp dir, then rename it.
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=cache_dir))
    try:
        with tarfile.open(source, "r:*") as tf:
            for m in tqdm(tf, desc=f"extract {source.name}", unit=" files", disable=not progress):
                if m.isfile() or m.isdir():
                    tf.extract(m, tmp, filter="data")
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if dest.is_dir():  # another process won the race
            return dest
        raise
    return dest
