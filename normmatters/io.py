"""Files written whole or not at all (the ground floor every package writes through): a temp file
beside the target, fsync, rename, fsync the directory.

A writer holds an exclusive ``flock`` on its temp file while it writes, so a clean-up can tell a
killed writer's leftover (lock free) from a live writer's file (lock held) and removes only the
first. Temp files are created with mode 0666 and the kernel applies the user's umask (no
``os.umask`` round trip, which would change the process's umask for a moment under other threads).
A write that fails for lack of space or a file-size limit becomes one line naming the file.
"""
from __future__ import annotations

import fcntl
import os
import secrets
import time
from pathlib import Path


class WriteFailed(OSError):
    """A file could not be written (full disk, file-size limit, ...): one line naming it."""


def fsync_path(path: str | Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or (str(err).splitlines() or [type(err).__name__])[0]
    return text[:160]


def atomic_write_bytes(path: str | Path, write) -> None:
    """Call write(tmp_path), fsync, then rename over `path`: readers see the old or the new file, never
    half, and after a crash the new one is on disk. The file gets the user's umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until the file is renamed: not anyone's leftover
        try:
            write(str(tmp))
            fsync_path(tmp)
        except (OSError, RuntimeError) as err:  # torch.save reports a full disk as a RuntimeError
            raise WriteFailed(f"cannot write {path}: {_reason(err)}") from None
        os.replace(tmp, path)
        fsync_path(path.parent, directory=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def lock_free(path: str | Path, mode: int = fcntl.LOCK_EX) -> bool | None:
    """Whether ``path``'s flock could be taken in ``mode`` now (no live holder): None when the file
    cannot be opened, False when a live process holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _abandoned(path: Path) -> bool:
    """Whether no live writer holds this temp file."""
    try:
        return lock_free(path) is True
    except OSError:
        return False


def remove_stale_temps(directory: str | Path, prefix: str = ".", min_age_s: float = 0.0) -> list[Path]:
    """Delete the temp files (``<prefix>*.tmp``) that killed writers left in `directory`; returns them.
    A file a live writer holds is kept; ``min_age_s`` also keeps files modified that recently (in a
    directory no lock guards, a writer may have created its file and not yet locked it)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    now, removed = time.time(), []
    for path in sorted(directory.glob(f"{prefix}*.tmp")):
        try:
            old = now - path.stat().st_mtime >= min_age_s
        except OSError:
            continue
        if old and path.is_file() and _abandoned(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
